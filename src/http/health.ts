/**
 * `GET /health`: the gRPC health service's answer over HTTP, for probes and balancers that speak only HTTP. Public
 * (probes carry no token); 200 while the server takes requests, 503 while it shuts down or no worker can run.
 */
import type { FastifyInstance } from 'fastify';
import type { HttpContext } from './queue-call.js';

export const HEALTH_PATH = '/health';

export function registerHealth(app: FastifyInstance, ctx: HttpContext): void {
  app.get(HEALTH_PATH, async (_request, reply) => {
    if (ctx.draining()) return reply.code(503).send({ status: 'NOT_SERVING', reason: 'shutting down' });
    if (!ctx.serving())
      return reply.code(503).send({ status: 'NOT_SERVING', reason: 'no inference worker is running' });
    return { status: 'SERVING' };
  });
}
