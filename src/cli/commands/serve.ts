/** `safe-sd serve`: the gRPC generation server (also `npm start`). */
import { readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { pino } from 'pino';
import { providerSettings } from '../../onnx/session.js';
import { startServer } from '../../server/server.js';
import { stopOnSignals } from '../../server/signals.js';
import { providerOption } from '../options.js';
import { UsageError } from '../errors.js';

export function intOption(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    return n;
  };
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the gRPC generation server')
    .option('--manifest <file>', 'pipelines manifest', 'pipelines/default.json')
    .option('--host <host>', 'address to bind (0.0.0.0 opens the server to the network)', '127.0.0.1')
    .option('--port <n>', 'gRPC port', intOption(0), 50051)
    .option('--workers <n>', 'inference worker threads (each loads the models)', intOption(1), 1)
    .option('--max-queue <n>', 'waiting requests before RESOURCE_EXHAUSTED', intOption(0), 64)
    .option('--max-batch <n>', 'jobs sharing one UNet batch', intOption(1), 4)
    .option('--grace-seconds <n>', 'on SIGTERM/SIGINT, time for running requests to finish', intOption(0), 30)
    .option('--worker-stall-seconds <n>', 'replace a worker silent this long during a batch', intOption(1), 300)
    .option('--metrics-port <n>', 'Prometheus /metrics HTTP port (behind --token when set), 0 = off', intOption(0), 0)
    .option('--tls-cert <file>', 'PEM certificate chain (with --tls-key)')
    .option('--tls-key <file>', 'PEM private key (with --tls-cert)')
    .option('--http-port <n>', 'also serve the A1111 and OpenAI APIs and the page over HTTP on this port', intOption(0))
    .option('--cors <origin>', 'let browsers call the HTTP API from this origin (default: no CORS)')
    .option('--token <token>', 'require "authorization: Bearer <token>" (default: env SAFE_SD_TOKEN)')
    .option('--max-message-mb <n>', 'largest response message in MiB', intOption(1), 64)
    .option('--log-level <level>', 'pino log level', 'info')
    .addOption(providerOption())
    .addOption(
      new Option('--engine-module <file>', 'module exporting createEngine (tests use a fake)')
        .env('SAFE_SD_ENGINE_MODULE')
        .hideHelp(),
    )
    .action(async (o) => {
      if (!!o.tlsCert !== !!o.tlsKey) throw new UsageError('--tls-cert and --tls-key go together');
      const logger = pino({ level: o.logLevel, base: { service: 'safe-sd' } });
      const token: string | undefined = o.token ?? (process.env.SAFE_SD_TOKEN || undefined);
      if (!LOOPBACK.has(o.host) && !token && !o.tlsCert) {
        logger.warn({ host: o.host }, 'serving beyond loopback without TLS or a token');
      }
      const server = await startServer({
        host: o.host,
        port: o.port,
        workers: o.workers,
        maxQueue: o.maxQueue,
        maxBatch: o.maxBatch,
        engineModule: o.engineModule ? resolvePath(o.engineModule) : undefined,
        engineOptions: { manifest: resolvePath(o.manifest), session: providerSettings(o.provider) },
        tls: o.tlsCert ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey) } : undefined,
        token,
        metricsPort: o.metricsPort,
        http: o.httpPort === undefined ? undefined : { port: o.httpPort, corsOrigin: o.cors },
        workerStallMs: o.workerStallSeconds * 1000,
        maxResponseBytes: o.maxMessageMb * 1024 * 1024,
        logger,
      });
      await stopOnSignals(server, o.graceSeconds * 1000, logger);
      process.exit(0);
    });
}
