/**
 * OpenAI's Images API (`POST /v1/images/generations`, `GET /v1/models`) for the clients and SDKs written for it.
 * `model` is `<pipeline>` or `<pipeline>/<encoder>`; images come back as `b64_json` (there is no URL to fetch them
 * from later). Each image also carries `safety`, the verdict of the pipeline's classifier.
 */
import type { FastifyInstance } from 'fastify';
import { InvalidRequestError, type GenerationRequest } from '../pipeline/engine-api.js';
import { LIMITS, resolveRequest } from '../pipeline/request.js';
import { HttpError } from './errors.js';
import { pngBase64 } from './images.js';
import { infotext } from './infotext.js';
import { submitCall, type HttpContext } from './queue-call.js';

const GENERATIONS_BODY = {
  type: 'object',
  required: ['prompt'],
  properties: {
    prompt: { type: 'string', minLength: 1 },
    model: { type: ['string', 'null'] },
    n: { type: ['integer', 'null'], minimum: 1, maximum: LIMITS.maxImages },
    size: { type: ['string', 'null'] },
    response_format: { type: ['string', 'null'] },
    output_format: { type: ['string', 'null'] },
    quality: { type: ['string', 'null'] },
    style: { type: ['string', 'null'] },
    user: { type: ['string', 'null'] },
  },
} as const;

interface GenerationsBody {
  prompt: string;
  model?: string | null;
  n?: number | null;
  size?: string | null;
  response_format?: string | null;
  output_format?: string | null;
}

function request(ctx: HttpContext, b: GenerationsBody): GenerationRequest {
  if (b.response_format && b.response_format !== 'b64_json') {
    throw new HttpError(
      400,
      `response_format '${b.response_format}' is not supported: this server returns b64_json only`,
    );
  }
  if (b.output_format && b.output_format !== 'png')
    throw new HttpError(400, `output_format '${b.output_format}' is not supported: png only`);
  let width: number | undefined;
  let height: number | undefined;
  if (b.size && b.size !== 'auto') {
    const m = /^(\d+)x(\d+)$/.exec(b.size);
    if (!m) throw new HttpError(400, `size '${b.size}' must be WIDTHxHEIGHT (e.g. 512x512) or auto`);
    [width, height] = [Number(m[1]), Number(m[2])];
  }
  const [pipeline, encoder] = (b.model ?? '').split('/', 2);
  if (pipeline && !ctx.models.pipelines.some((p) => p.name === pipeline)) {
    const ids = modelIds(ctx).join(', ');
    throw new HttpError(404, `The model '${b.model}' does not exist (available: ${ids})`, 'model_not_found');
  }
  try {
    return resolveRequest(ctx.models, { pipeline, encoder, prompt: b.prompt, width, height, numImages: b.n ?? 1 });
  } catch (e) {
    if (e instanceof InvalidRequestError) throw new HttpError(400, e.message);
    throw e;
  }
}

function modelIds(ctx: HttpContext): string[] {
  return ctx.models.pipelines.flatMap((p) => [
    p.name,
    ...ctx.models.encoders.filter((e) => e.pipeline === p.name).map((e) => `${p.name}/${e.name}`),
  ]);
}

export function registerOpenai(app: FastifyInstance, ctx: HttpContext): void {
  app.post<{ Body: GenerationsBody }>(
    '/v1/images/generations',
    { schema: { body: GENERATIONS_BODY } },
    async (req, reply) => {
      const r = request(ctx, req.body);
      const [images] = await submitCall(ctx, 'images.generations', [r], reply).result;
      const data = images!.map((img) => ({
        b64_json: pngBase64(img, infotext(r, img)),
        revised_prompt: r.prompt,
        safety: img.safety ?? null,
      }));
      if (data.every((d) => !d.b64_json)) {
        const reason = images![0]?.safety?.reason ?? 'refused by the safety check';
        throw new HttpError(
          400,
          `Your request was rejected by the safety system: ${reason}`,
          'content_policy_violation',
        );
      }
      return { created: Math.floor(Date.now() / 1000), data };
    },
  );

  app.get('/v1/models', async () => ({
    object: 'list',
    data: modelIds(ctx).map((id) => ({ id, object: 'model', created: 0, owned_by: 'safe-sd' })),
  }));
}
