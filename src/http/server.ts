/**
 * The HTTP transport: AUTOMATIC1111's and OpenAI's APIs, the compare stream and the page, on the same request
 * queue as gRPC. Same host, bearer token and TLS as gRPC; bodies capped; CORS only for the origin `--cors` names.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import cors from '@fastify/cors';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import { registerA1111 } from './a1111.js';
import { registerCompare } from './compare.js';
import { handleError, HttpError, errorBody } from './errors.js';
import { HEALTH_PATH, registerHealth } from './health.js';
import { registerOpenai } from './openai.js';
import { PUBLIC_PATHS, registerPage } from './page.js';
import type { HttpContext } from './queue-call.js';

export interface HttpOptions {
  host: string;
  /** 0 = any free port. */
  port: number;
  token?: string;
  tls?: { cert: Buffer; key: Buffer };
  /** The one origin browsers may call the API from; none = no CORS headers. */
  corsOrigin?: string;
}

/** Request bodies are prompts and settings: capped at 1 MiB (413 beyond), as gRPC caps its requests. */
export const MAX_BODY_BYTES = 1 << 20;

export interface RunningHttp {
  port: number;
  app: FastifyInstance;
  close(): Promise<void>;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export async function startHttpServer(ctx: HttpContext, opts: HttpOptions): Promise<RunningHttp> {
  const app = Fastify({
    bodyLimit: MAX_BODY_BYTES,
    // pino is the project's logger: Fastify logs through a child of it.
    loggerInstance: ctx.logger.child({ transport: 'http' }),
    // Each request logs once, when done, with its outcome (queue-call.ts), as gRPC calls do.
    logController: new LogController({ disableRequestLogging: true }),
    // Unknown fields of our own bodies are errors, not silently dropped.
    ajv: { customOptions: { removeAdditional: false } },
    ...(opts.tls ? { https: { cert: opts.tls.cert, key: opts.tls.key } } : {}),
  }) as unknown as FastifyInstance;
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(errorBody(request.url, 404, `no route ${request.method} ${request.url.split('?')[0]}`));
  });
  if (opts.corsOrigin) await app.register(cors, { origin: opts.corsOrigin });
  if (opts.token) {
    const expected = digest(opts.token);
    app.addHook('onRequest', async (request) => {
      const path = request.url.split('?')[0]!;
      if (PUBLIC_PATHS.has(path) || path === HEALTH_PATH || request.method === 'OPTIONS') return;
      const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
      // Hash both sides so the comparison takes the same time whatever the token's length.
      if (match && timingSafeEqual(digest(match[1]!), expected)) return;
      throw new HttpError(401, match ? 'invalid bearer token' : 'missing "Authorization: Bearer <token>" header');
    });
  }
  registerHealth(app, ctx);
  registerA1111(app, ctx);
  registerOpenai(app, ctx);
  registerCompare(app, ctx);
  await registerPage(app);
  await app.listen({ host: opts.host, port: opts.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  return {
    port,
    app,
    async close() {
      await app.close();
    },
  };
}
