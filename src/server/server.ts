/**
 * The server process: inference workers, the request queue, the transports in front of it (gRPC, HTTP) and Prometheus
 * metrics, started together and shut down in order (stop taking calls, drain the queue, close workers and ports).
 */
import type http from 'node:http';
import type { Logger } from 'pino';
import { startGrpcTransport } from '../grpc/transport.js';
import type { ModelsInfo } from '../pipeline/engine-api.js';
import { ServerMetrics } from '../serving/metrics.js';
import { RequestQueue } from '../serving/request-queue.js';
import { startHttpServer, type RunningHttp } from '../http/server.js';
import { WorkerPool } from '../serving/worker-pool.js';

export interface ServerOptions {
  host: string;
  /** 0 = any free port (see RunningServer.port). */
  port: number;
  workers: number;
  maxQueue: number;
  maxBatch: number;
  /** Module exporting createEngine; default the production engine (src/pipeline/engine.ts). */
  engineModule?: string;
  /** Handed to createEngine, e.g. `{ manifest }`. */
  engineOptions: Record<string, unknown>;
  tls?: { cert: Buffer; key: Buffer };
  token?: string;
  /** HTTP port of /metrics; 0 = off, undefined = off. Behind `token` when one is set. */
  metricsPort?: number;
  /** A worker silent this long while running a batch is abandoned and replaced (default 300 s). */
  workerStallMs?: number;
  /** First delay between attempts to restart a worker that failed to start (default 250 ms, doubling to 30 s). */
  restartDelayMs?: number;
  /** Largest response (images) in bytes. Requests are small and capped at 1 MiB. */
  maxResponseBytes: number;
  /** The HTTP APIs and page on the same host, queue, token and TLS; absent = off. */
  http?: { port: number; corsOrigin?: string };
  logger: Logger;
}

export interface RunningServer {
  port: number;
  /** Where the HTTP face listens, when on. */
  httpPort?: number;
  models: ModelsInfo;
  queue: RequestQueue;
  metrics: ServerMetrics;
  /**
   * Stop accepting, let running requests finish for up to graceMs, end the rest with UNAVAILABLE, close the workers
   * once they return from their current UNet call. Later calls return the same promise.
   */
  shutdown(graceMs: number): Promise<void>;
  /** During a shutdown: end its grace now (a second signal). */
  endGraceNow(): void;
}

const WORKER_CLOSE_MS = 60_000;

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  if (!Number.isInteger(opts.maxBatch) || opts.maxBatch < 1) throw new Error(`max-batch must be at least 1`);
  if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) throw new Error(`max-queue must be at least 0`);
  const log = opts.logger;
  const metrics = new ServerMetrics(true);
  const pool = await WorkerPool.start({
    size: opts.workers,
    engineModule: opts.engineModule,
    engineOptions: opts.engineOptions,
    logger: log,
    stallMs: opts.workerStallMs,
    restartDelayMs: opts.restartDelayMs,
  });
  const queue = new RequestQueue(pool, { maxQueue: opts.maxQueue, maxBatch: opts.maxBatch }, metrics, log);
  let draining = false;
  let stopped: Promise<void> | undefined;

  const grpcServer = await startGrpcTransport({
    host: opts.host,
    port: opts.port,
    tls: opts.tls,
    token: opts.token,
    maxResponseBytes: opts.maxResponseBytes,
    models: pool.models,
    queue,
    metrics,
    logger: log,
    draining: () => draining,
  }).catch(async (e: unknown) => {
    await pool.close();
    throw e;
  });
  // NOT_SERVING while no worker can run (all crashed, restarts failing), so load balancers look elsewhere.
  pool.on('serving', (serving: boolean) => draining || grpcServer.setServing(serving));
  let metricsServer: http.Server | undefined;
  let httpServer: RunningHttp | undefined;
  try {
    if (opts.metricsPort) metricsServer = await metrics.listen(opts.host, opts.metricsPort, opts.token);
    if (opts.http) {
      httpServer = await startHttpServer(
        { models: pool.models, queue, metrics, logger: log, draining: () => draining, serving: () => pool.live > 0 },
        { host: opts.host, port: opts.http.port, token: opts.token, tls: opts.tls, corsOrigin: opts.http.corsOrigin },
      );
    }
  } catch (e) {
    await grpcServer.close();
    await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
    await pool.close();
    throw e;
  }
  const port = grpcServer.port;
  log.info(
    {
      address: `${opts.host}:${port}`,
      tls: !!opts.tls,
      auth: !!opts.token,
      workers: opts.workers,
      maxQueue: opts.maxQueue,
      maxBatch: opts.maxBatch,
      metricsPort: opts.metricsPort || undefined,
      httpPort: httpServer?.port,
      pipelines: pool.models.pipelines.map((p) => p.name),
      encoders: pool.models.encoders.map((e) => e.name),
    },
    'safe-sd server listening',
  );

  return {
    port,
    httpPort: httpServer?.port,
    models: pool.models,
    queue,
    metrics,
    endGraceNow: () => queue.endGraceNow(),
    shutdown(graceMs) {
      stopped ??= stop(graceMs);
      return stopped;
    },
  };

  async function stop(graceMs: number) {
    draining = true;
    grpcServer.setServing(false);
    log.info({ queued: queue.queued, running: queue.active, graceMs }, 'shutting down');
    await queue.drain(graceMs);
    // Cancelled work returns within one UNet call; only a stuck worker makes this wait run out.
    await pool.close(WORKER_CLOSE_MS);
    await grpcServer.close();
    await httpServer?.close();
    await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
    log.info('server stopped');
  }
}
