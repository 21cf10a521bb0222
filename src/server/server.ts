/** Assembles the gRPC server: Diffusion service, health, reflection, auth, workers, request queue and metrics. */
import type http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import type { Logger } from 'pino';
import type { ModelsInfo } from '../pipeline/engine-api.js';
import { bearerTokenInterceptor } from '../grpc/auth.js';
import { ServerMetrics } from '../serving/metrics.js';
import { diffusionService, packageDefinition, SERVICE_NAME } from '../grpc/proto.js';
import { RequestQueue } from '../serving/request-queue.js';
import { diffusionHandlers } from '../grpc/service.js';
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
  /** HTTP port of /metrics; 0 = off, undefined = off. */
  metricsPort?: number;
  /** Largest response (images) in bytes. Requests are small and capped at 1 MiB. */
  maxResponseBytes: number;
  logger: Logger;
}

export interface RunningServer {
  port: number;
  models: ModelsInfo;
  queue: RequestQueue;
  metrics: ServerMetrics;
  /** Stop accepting, let running requests finish for up to graceMs, cancel the rest, close workers. */
  shutdown(graceMs: number): Promise<void>;
}

const MAX_REQUEST_BYTES = 1 << 20;

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
  });
  const queue = new RequestQueue(pool, { maxQueue: opts.maxQueue, maxBatch: opts.maxBatch }, metrics, log);
  let draining = false;

  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': opts.maxResponseBytes,
    interceptors: opts.token ? [bearerTokenInterceptor(opts.token)] : [],
  });
  server.addService(
    diffusionService,
    diffusionHandlers({ models: pool.models, queue, metrics, logger: log, draining: () => draining }),
  );
  const health = new HealthImplementation({ '': 'SERVING', [SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);
  new ReflectionService(packageDefinition).addToServer(server);

  const credentials = opts.tls
    ? grpc.ServerCredentials.createSsl(null, [{ private_key: opts.tls.key, cert_chain: opts.tls.cert }], false)
    : grpc.ServerCredentials.createInsecure();
  let port: number;
  let metricsServer: http.Server | undefined;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${opts.host}:${opts.port}`, credentials, (err, p) => (err ? reject(err) : resolve(p))),
    );
    if (opts.metricsPort) metricsServer = await metrics.listen(opts.host, opts.metricsPort);
  } catch (e) {
    server.forceShutdown();
    await pool.close();
    throw e;
  }
  log.info(
    {
      address: `${opts.host}:${port}`,
      tls: !!opts.tls,
      auth: !!opts.token,
      workers: opts.workers,
      maxQueue: opts.maxQueue,
      maxBatch: opts.maxBatch,
      metricsPort: opts.metricsPort || undefined,
      pipelines: pool.models.pipelines.map((p) => p.name),
      encoders: pool.models.encoders.map((e) => e.name),
    },
    'safe-sd server listening',
  );

  return {
    port,
    models: pool.models,
    queue,
    metrics,
    async shutdown(graceMs) {
      if (draining) return;
      draining = true;
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(SERVICE_NAME, 'NOT_SERVING');
      log.info({ queued: queue.queued, running: queue.active, graceMs }, 'shutting down');
      await queue.drain(graceMs);
      await pool.close();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
      log.info('server stopped');
    },
  };
}
