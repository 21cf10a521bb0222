/** The gRPC face of the server: Diffusion service, standard health, reflection and bearer-token auth on one port. */
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { ModelsInfo } from '../pipeline/engine-api.js';
import type { ServerMetrics } from '../serving/metrics.js';
import type { RequestQueue } from '../serving/request-queue.js';
import { bearerTokenInterceptor } from './auth.js';
import { acceptFarDeadlines } from './far-deadlines.js';
import { withTolerantDecoding } from './request-decoding.js';
import { diffusionService, packageDefinition, SERVICE_NAME } from './proto.js';
import { diffusionHandlers } from './service.js';

export interface GrpcTransportOptions {
  host: string;
  /** 0 = any free port (see GrpcTransport.port). */
  port: number;
  tls?: { cert: Buffer; key: Buffer };
  token?: string;
  /** Largest response (images) in bytes. Requests are small and capped at 1 MiB. */
  maxResponseBytes: number;
  models: ModelsInfo;
  queue: RequestQueue;
  metrics: ServerMetrics;
  logger: Logger;
  /** True once shutdown began: new calls get UNAVAILABLE. */
  draining(): boolean;
}

export interface GrpcTransport {
  port: number;
  /**
   * Health reports SERVING or NOT_SERVING (shutting down, no worker running), so balancers and probes look elsewhere.
   */
  setServing(serving: boolean): void;
  /** Close the port: open calls get up to 2 s to end, then are cut. */
  close(): Promise<void>;
}

const MAX_REQUEST_BYTES = 1 << 20;

export async function startGrpcTransport(opts: GrpcTransportOptions): Promise<GrpcTransport> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': opts.maxResponseBytes,
    interceptors: opts.token ? [bearerTokenInterceptor(opts.token)] : [],
  });
  server.addService(
    withTolerantDecoding(diffusionService),
    diffusionHandlers({
      models: opts.models,
      queue: opts.queue,
      metrics: opts.metrics,
      logger: opts.logger,
      draining: opts.draining,
    }),
  );
  const health = new HealthImplementation({ '': 'SERVING', [SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);
  new ReflectionService(packageDefinition).addToServer(server);

  const credentials = opts.tls
    ? grpc.ServerCredentials.createSsl(null, [{ private_key: opts.tls.key, cert_chain: opts.tls.cert }], false)
    : grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${opts.host}:${opts.port}`, credentials, (err, p) => (err ? reject(err) : resolve(p))),
  ).catch((e: unknown) => {
    server.forceShutdown();
    throw e;
  });
  if (!acceptFarDeadlines(server)) opts.logger.warn('cannot filter grpc-timeout: deadlines > 24.8 days may expire');

  return {
    port,
    setServing(serving) {
      for (const name of ['', SERVICE_NAME]) health.setStatus(name, serving ? 'SERVING' : 'NOT_SERVING');
    },
    close: () =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
