/** Handlers of safesd.v1.Diffusion: validate, queue, stream queue position and progress, answer with images. */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  describeRequests,
  InvalidRequestError,
  type GeneratedImage,
  type GenerationRequest,
  type ModelsInfo,
  type PreviewImage,
} from '../pipeline/engine-api.js';
import type { ServerMetrics } from '../serving/metrics.js';
import type {
  CompareEventMsg,
  CompareRequestMsg,
  GenerateEventMsg,
  GenerateRequestMsg,
  ImageMsg,
  ListModelsResponseMsg,
} from './proto.js';
import { undecodable } from './request-decoding.js';
import { resolveCompare, resolveGenerate } from './resolve.js';
import { type FailureKind, type Handle, RejectedError, type RequestQueue } from '../serving/request-queue.js';

export interface ServiceContext {
  models: ModelsInfo;
  queue: RequestQueue;
  metrics: ServerMetrics;
  logger: Logger;
  /** True once shutdown began: new calls get UNAVAILABLE. */
  draining(): boolean;
}

/** The gRPC status of each way a request can end without images. */
const GRPC_STATUS: Record<FailureKind, grpc.status> = {
  invalid: grpc.status.INVALID_ARGUMENT,
  'queue-full': grpc.status.RESOURCE_EXHAUSTED,
  unavailable: grpc.status.UNAVAILABLE,
  cancelled: grpc.status.CANCELLED,
  deadline: grpc.status.DEADLINE_EXCEEDED,
  internal: grpc.status.INTERNAL,
};

const DEADLINE_SLACK_MS = 50;

type PreviewEvent = { step: number; png: Buffer; width: number; height: number; column: number };
type Event<R> =
  | { queued: { position: number } }
  | { progress: { step: number; total: number } }
  | { preview: PreviewEvent }
  | { result: R };

export function diffusionHandlers(ctx: ServiceContext): grpc.UntypedServiceImplementation {
  return {
    Generate(call: grpc.ServerWritableStream<GenerateRequestMsg, GenerateEventMsg>) {
      serveStream(
        ctx,
        'Generate',
        call,
        (m) => [resolveGenerate(ctx.models, m)],
        (images) => ({
          images: images[0]!.map(imageMsg),
        }),
      );
    },
    Compare(call: grpc.ServerWritableStream<CompareRequestMsg, CompareEventMsg>) {
      serveStream(
        ctx,
        'Compare',
        call,
        (m) => resolveCompare(ctx.models, m),
        (images, requests) => ({
          columns: requests.map((r, i) => ({ encoder: r.encoder, images: images[i]!.map(imageMsg) })),
          seed: requests[0]!.seed.toString(),
        }),
      );
    },
    ListModels(
      call: grpc.ServerUnaryCall<object, ListModelsResponseMsg>,
      callback: grpc.sendUnaryData<ListModelsResponseMsg>,
    ) {
      const garbled = undecodable(call.request);
      if (garbled !== undefined) {
        return callback({ code: grpc.status.INVALID_ARGUMENT, details: `undecodable ListModelsRequest: ${garbled}` });
      }
      const { pipelines, encoders } = ctx.models;
      callback(null, { pipelines: pipelines.map((p) => ({ ...p, previews: p.previews ?? false })), encoders });
    },
  };
}

function serveStream<Req, R>(
  ctx: ServiceContext,
  method: string,
  call: grpc.ServerWritableStream<Req, Event<R>>,
  resolve: (msg: Req) => GenerationRequest[],
  toResult: (images: GeneratedImage[][], requests: GenerationRequest[]) => R,
) {
  const started = performance.now();
  const log = ctx.logger.child({ reqId: randomUUID(), method, peer: call.getPeer() });
  let firstStepAt: number | undefined;
  let requests: GenerationRequest[] = [];

  const finish = (code: grpc.status, details?: string) => {
    const totalMs = Math.round(performance.now() - started);
    ctx.metrics.requestDuration.labels(method, grpc.status[code]).observe(totalMs / 1000);
    const waitMs = firstStepAt === undefined ? undefined : Math.round(firstStepAt - started);
    log.info(
      { code: grpc.status[code], details, encoders: requests.map((r) => r.encoder), waitMs, totalMs },
      'request done',
    );
    if (code === grpc.status.OK) call.end();
    else if (!call.cancelled) call.emit('error', { code, details });
  };

  if (ctx.draining()) return finish(grpc.status.UNAVAILABLE, 'server is shutting down');
  const garbled = undecodable(call.request);
  if (garbled !== undefined) return finish(grpc.status.INVALID_ARGUMENT, `undecodable ${method}Request: ${garbled}`);
  try {
    requests = resolve(call.request);
  } catch (e) {
    if (e instanceof InvalidRequestError) return finish(grpc.status.INVALID_ARGUMENT, e.message);
    throw e;
  }
  log.info(describeRequests(requests), 'request accepted');

  const write = (event: Event<R>) => {
    if (!call.cancelled) call.write(event);
  };
  // The queue owns the deadline (it refuses what cannot finish in time and withdraws what runs past it).
  const deadline = Number(call.getDeadline());
  let handle: Handle;
  try {
    handle = ctx.queue.submit(
      log.bindings().reqId as string,
      requests,
      {
        queued: (position) => write({ queued: { position } }),
        progress: (step, total) => {
          firstStepAt ??= performance.now();
          write({ progress: { step, total } });
        },
        ...((call.request as { previews?: boolean }).previews && {
          preview: (column: number, step: number, p: PreviewImage) =>
            write({ preview: { step, png: Buffer.from(p.png), width: p.width, height: p.height, column } }),
        }),
        done: (result) => {
          if (result.ok) {
            write({ result: toResult(result.images, requests) });
            finish(grpc.status.OK);
          } else {
            finish(GRPC_STATUS[result.kind], result.message);
          }
        },
      },
      { deadline },
    );
  } catch (e) {
    if (e instanceof RejectedError) return finish(GRPC_STATUS[e.kind], e.message);
    throw e;
  }
  const accepted = handle;

  const onCancelled = () => {
    // grpc-js ends a call at its deadline with its own timer, which may fire a moment before Date.now() reaches the
    // deadline, and says nothing of why a call was cancelled: a cancel that close to the deadline is the deadline.
    const expired = Number.isFinite(deadline) && Date.now() >= deadline - DEADLINE_SLACK_MS;
    accepted.cancel(
      expired ? 'deadline' : 'cancelled',
      expired ? 'deadline exceeded before the images were ready' : 'cancelled by the client',
    );
  };
  if (call.cancelled) onCancelled();
  else call.on('cancelled', onCancelled);
}

function imageMsg(img: GeneratedImage): ImageMsg {
  return {
    png: Buffer.from(img.png.buffer, img.png.byteOffset, img.png.byteLength),
    seed: img.seed.toString(),
    width: img.width,
    height: img.height,
    encoder: img.encoder,
    scheduler: img.scheduler,
    steps: img.steps,
    guidanceScale: img.guidanceScale,
    pipeline: img.pipeline,
    safety: img.safety ?? null,
  };
}
