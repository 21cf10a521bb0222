/**
 * `POST /v1/compare`: one prompt and seed through several encoders, streamed as Server-Sent Events (queue
 * position, progress, previews per column, then the images), and `GET /v1/pipelines`, what the page offers.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { InvalidRequestError, type GenerationRequest } from '../pipeline/engine-api.js';
import { LIMITS, resolveRequest } from '../pipeline/request.js';
import { SCHEDULER_NAMES } from '../pipeline/schedulers/index.js';
import type { CompareEvent, PipelinesResponse } from './compare-events.js';
import { HttpError, openaiError } from './errors.js';
import { imageJson } from './images.js';
import { submitCall, type HttpContext } from './queue-call.js';

const uint = { type: 'integer', minimum: 0 } as const;

const COMPARE_BODY = {
  type: 'object',
  required: ['prompt', 'encoders'],
  additionalProperties: false,
  properties: {
    pipeline: { type: 'string' },
    encoders: { type: 'array', items: { type: 'string' }, minItems: 2, maxItems: LIMITS.maxCompareEncoders },
    prompt: { type: 'string' },
    negative_prompt: { type: 'string' },
    // A string first: Ajv's type coercion would turn a 20-digit string into an inexact number.
    seed: { anyOf: [{ type: 'string', pattern: '^[0-9]{1,20}$' }, uint] },
    steps: uint,
    guidance_scale: { type: 'number', minimum: 0 },
    width: uint,
    height: uint,
    scheduler: { type: 'string' },
    num_images: uint,
    clip_skip: uint,
  },
} as const;

interface CompareBody {
  pipeline?: string;
  encoders: string[];
  prompt: string;
  negative_prompt?: string;
  seed?: number | string;
  steps?: number;
  guidance_scale?: number;
  width?: number;
  height?: number;
  scheduler?: string;
  num_images?: number;
  clip_skip?: number;
}

function compareRequests(ctx: HttpContext, b: CompareBody): GenerationRequest[] {
  try {
    const first = resolveRequest(ctx.models, {
      pipeline: b.pipeline,
      encoder: b.encoders[0],
      prompt: b.prompt,
      negativePrompt: b.negative_prompt,
      seed: b.seed === undefined ? undefined : BigInt(b.seed),
      steps: b.steps,
      guidanceScale: b.guidance_scale,
      width: b.width,
      height: b.height,
      scheduler: b.scheduler,
      numImages: b.num_images,
      clipSkip: b.clip_skip,
    });
    return b.encoders.map((encoder) => resolveRequest(ctx.models, { ...first, encoder }));
  } catch (e) {
    if (e instanceof InvalidRequestError) throw new HttpError(400, e.message);
    throw e;
  }
}

/** Events wait in a buffer until the stream's head is written (the queue reports a position while admitting). */
class EventStream {
  private buffered: CompareEvent[] = [];
  private open = false;

  constructor(private readonly reply: FastifyReply) {}

  start(): void {
    this.reply.hijack();
    // Hijacked replies skip Fastify's header handling: carry over what hooks set (CORS) by hand.
    const headers = {
      ...this.reply.getHeaders(),
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    };
    this.reply.raw.writeHead(200, headers as Record<string, string>);
    this.open = true;
    for (const e of this.buffered) this.send(e);
    this.buffered = [];
  }

  send(e: CompareEvent): void {
    if (!this.open) return void this.buffered.push(e);
    if (!this.reply.raw.destroyed) this.reply.raw.write(`event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`);
  }

  end(): void {
    this.reply.raw.end();
  }
}

export function registerCompare(app: FastifyInstance, ctx: HttpContext): void {
  app.get(
    '/v1/pipelines',
    async (): Promise<PipelinesResponse> => ({
      default_pipeline: ctx.models.defaultPipeline,
      pipelines: ctx.models.pipelines.map((p) => ({
        ...p,
        encoders: ctx.models.encoders.filter((e) => e.pipeline === p.name),
      })),
      schedulers: SCHEDULER_NAMES,
    }),
  );

  app.post<{ Body: CompareBody }>('/v1/compare', { schema: { body: COMPARE_BODY } }, async (request, reply) => {
    const requests = compareRequests(ctx, request.body);
    const stream = new EventStream(reply);
    const call = submitCall(ctx, 'compare', requests, reply, {
      queued: (position) => stream.send({ event: 'queued', data: { position } }),
      progress: (step, total) => stream.send({ event: 'progress', data: { step, total } }),
      preview: (column, step, p) => {
        const png = Buffer.from(p.png).toString('base64');
        stream.send({
          event: 'preview',
          data: { column, encoder: requests[column]!.encoder, step, png, width: p.width, height: p.height },
        });
      },
    });
    stream.start();
    try {
      const images = await call.result;
      const columns = requests.map((r, i) => ({
        encoder: r.encoder,
        images: images[i]!.map((img) => imageJson(r, img)),
      }));
      stream.send({ event: 'result', data: { seed: requests[0]!.seed.toString(), columns } });
    } catch (e) {
      const status = e instanceof HttpError ? e.statusCode : 500;
      stream.send({ event: 'error', data: { status, ...openaiError(status, (e as Error).message) } });
    } finally {
      stream.end();
    }
  });
}
