/**
 * One HTTP request's way through the shared request queue: the same queue, workers, batching and limits as gRPC.
 * The client going away cancels the request, as a cancelled gRPC call does.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import {
  describeRequests,
  type GeneratedImage,
  type GenerationRequest,
  type ModelsInfo,
  type PreviewImage,
} from '../pipeline/engine-api.js';
import type { ServerMetrics } from '../serving/metrics.js';
import { RejectedError, type Handle, type RequestQueue } from '../serving/request-queue.js';
import { HttpError, httpStatus } from './errors.js';

export interface HttpContext {
  models: ModelsInfo;
  queue: RequestQueue;
  metrics: ServerMetrics;
  logger: Logger;
  /** True once shutdown began: new requests get 503. */
  draining(): boolean;
  /** False while no inference worker can run (all crashed, restarts failing). */
  serving(): boolean;
}

export interface CallEvents {
  queued?(position: number): void;
  progress?(step: number, total: number): void;
  /** `index`: which of the call's requests (a Compare column, an A1111 batch image). */
  preview?(index: number, step: number, preview: PreviewImage): void;
}

export interface QueueCall {
  /** Resolves with one image list per request, else rejects with an HttpError. */
  result: Promise<GeneratedImage[][]>;
  /** Stop the request now (A1111's interrupt); `result` rejects with `interrupted` set. */
  interrupt(): void;
}

/**
 * Submit `requests` as one queue entry (batched together, as a gRPC Compare). Throws an HttpError when the queue
 * refuses it (full, shutting down), before anything is sent to the client.
 */
export function submitCall(
  ctx: HttpContext,
  method: string,
  requests: GenerationRequest[],
  reply: FastifyReply,
  events: CallEvents = {},
): QueueCall {
  if (ctx.draining()) throw new HttpError(503, 'server is shutting down');
  const started = performance.now();
  const log = ctx.logger.child({ reqId: randomUUID(), method, peer: reply.request.ip });
  log.info(describeRequests(requests), 'request accepted');
  let interrupted = false;
  let settle!: { resolve(images: GeneratedImage[][]): void; reject(e: Error): void };
  const result = new Promise<GeneratedImage[][]>((resolve, reject) => (settle = { resolve, reject }));
  let handle: Handle;
  try {
    handle = ctx.queue.submit(log.bindings().reqId as string, requests, {
      queued: (position) => events.queued?.(position),
      progress: (step, total) => events.progress?.(step, total),
      // Only callers that show previews get them made (OpenAI's images API does not).
      ...(events.preview && { preview: events.preview }),
      done: (r) => {
        const outcome = r.ok ? 'ok' : r.kind;
        const totalMs = Math.round(performance.now() - started);
        ctx.metrics.requestDuration.labels(method, outcome).observe(totalMs / 1000);
        log.info({ outcome, details: r.ok ? undefined : r.message, totalMs }, 'request done');
        if (r.ok) settle.resolve(r.images);
        else settle.reject(Object.assign(new HttpError(httpStatus(r.kind), r.message), { interrupted }));
      },
    });
  } catch (e) {
    if (e instanceof RejectedError) throw new HttpError(httpStatus(e.kind), e.message);
    throw e;
  }
  // Nobody is left to read the outcome of a request whose client went away; only the log and metrics record it.
  result.catch(() => undefined);
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) handle.cancel('cancelled', 'cancelled by the client');
  });
  return {
    result,
    interrupt() {
      interrupted = true;
      handle.cancel('cancelled', 'interrupted');
    },
  };
}
