/**
 * AUTOMATIC1111's web UI API (`/sdapi/v1/...`), for the clients written for it: txt2img with its field names,
 * sampler names and `override_settings`, the models and samplers lists, progress with a preview, interrupt.
 *
 * Beyond A1111: `text_encoder` (top level or in `override_settings`) names the text encoder of the pipeline;
 * `sd_model_checkpoint` names a pipeline, or `<pipeline>/<encoder>`. Seeds follow A1111: image i of a batch is made
 * with seed + i, so each is reproducible alone.
 */
import type { FastifyInstance } from 'fastify';
import { InvalidRequestError, type GenerationRequest, type PreviewImage } from '../pipeline/engine-api.js';
import { LIMITS, randomSeed, resolveRequest } from '../pipeline/request.js';
import { HttpError } from './errors.js';
import { pngBase64 } from './images.js';
import { infotext } from './infotext.js';
import { submitCall, type HttpContext, type QueueCall } from './queue-call.js';
import { A1111_SAMPLERS, a1111SamplerName, schedulerFor } from './samplers.js';

const nullable = (type: string, extra: object = {}) => ({ type: [type, 'null'], ...extra });

const TXT2IMG_BODY = {
  type: 'object',
  properties: {
    prompt: nullable('string'),
    negative_prompt: nullable('string'),
    seed: nullable('integer', { minimum: -1 }),
    steps: nullable('integer', { minimum: 1 }),
    cfg_scale: nullable('number', { minimum: 0 }),
    width: nullable('integer', { minimum: 8 }),
    height: nullable('integer', { minimum: 8 }),
    sampler_name: nullable('string'),
    sampler_index: nullable('string'),
    scheduler: nullable('string'),
    batch_size: nullable('integer', { minimum: 1 }),
    n_iter: nullable('integer', { minimum: 1 }),
    text_encoder: nullable('string'),
    override_settings: nullable('object', {
      properties: {
        sd_model_checkpoint: nullable('string'),
        CLIP_stop_at_last_layers: nullable('integer', { minimum: 1 }),
        text_encoder: nullable('string'),
      },
    }),
    enable_hr: nullable('boolean'),
    restore_faces: nullable('boolean'),
    tiling: nullable('boolean'),
    subseed_strength: nullable('number'),
    init_images: nullable('array'),
  },
} as const;

interface Txt2ImgBody {
  prompt?: string | null;
  negative_prompt?: string | null;
  seed?: number | null;
  steps?: number | null;
  cfg_scale?: number | null;
  width?: number | null;
  height?: number | null;
  sampler_name?: string | null;
  sampler_index?: string | null;
  scheduler?: string | null;
  batch_size?: number | null;
  n_iter?: number | null;
  text_encoder?: string | null;
  override_settings?: {
    sd_model_checkpoint?: string | null;
    CLIP_stop_at_last_layers?: number | null;
    text_encoder?: string | null;
  } | null;
  enable_hr?: boolean | null;
  restore_faces?: boolean | null;
  tiling?: boolean | null;
  subseed_strength?: number | null;
  init_images?: unknown[] | null;
  [key: string]: unknown;
}

/** What A1111's /progress reports on: the oldest txt2img call still running here. */
interface Job {
  call: QueueCall;
  startedAt: number;
  timestamp: string;
  progress: { step: number; total: number; preview?: PreviewImage };
}

function timestamp(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

/** The features A1111 has and this server does not: refused when asked for, not silently ignored. */
function refuseUnsupported(b: Txt2ImgBody): void {
  const asked: string[] = [];
  if (b.enable_hr) asked.push('enable_hr (hires fix)');
  if (b.restore_faces) asked.push('restore_faces');
  if (b.tiling) asked.push('tiling');
  if (b.subseed_strength) asked.push('subseed_strength (variation seeds)');
  if (b.init_images?.length) asked.push('init_images (use /sdapi/v1/img2img on A1111)');
  if (asked.length) throw new HttpError(422, `not supported by this server: ${asked.join(', ')}`);
}

/** Pipeline and encoder from `sd_model_checkpoint` (`<pipeline>`, `<pipeline>/<encoder>`, or A1111's `name [hash]`). */
function checkpoint(value: string | null | undefined): { pipeline?: string; encoder?: string } {
  if (!value) return {};
  const [pipeline, encoder] = value.replace(/\s*\[[0-9a-f]+\]$/i, '').split('/', 2);
  return { pipeline, encoder };
}

export function txt2imgRequests(ctx: HttpContext, b: Txt2ImgBody): GenerationRequest[] {
  refuseUnsupported(b);
  const o = b.override_settings ?? {};
  const ck = checkpoint(o.sd_model_checkpoint);
  const count = (b.batch_size ?? 1) * (b.n_iter ?? 1);
  if (count > LIMITS.maxImages)
    throw new HttpError(422, `batch_size × n_iter = ${count} exceeds the limit of ${LIMITS.maxImages} images`);
  let scheduler: string | undefined;
  try {
    scheduler = schedulerFor(b.sampler_name ?? b.sampler_index ?? undefined, b.scheduler ?? undefined);
  } catch (e) {
    throw new HttpError(422, (e as Error).message);
  }
  const seed = b.seed === undefined || b.seed === null || b.seed === -1 ? randomSeed() : BigInt(b.seed);
  try {
    const first = resolveRequest(ctx.models, {
      pipeline: ck.pipeline,
      encoder: b.text_encoder ?? o.text_encoder ?? ck.encoder ?? undefined,
      prompt: b.prompt ?? '',
      negativePrompt: b.negative_prompt ?? '',
      seed,
      steps: b.steps ?? undefined,
      guidanceScale: b.cfg_scale ?? undefined,
      width: b.width ?? undefined,
      height: b.height ?? undefined,
      scheduler,
      numImages: 1,
      clipSkip: o.CLIP_stop_at_last_layers ?? 0,
    });
    return Array.from({ length: count }, (_, i) => ({ ...first, seed: (seed + BigInt(i)) % 2n ** 64n }));
  } catch (e) {
    if (e instanceof InvalidRequestError) throw new HttpError(422, e.message);
    throw e;
  }
}

export function registerA1111(app: FastifyInstance, ctx: HttpContext): void {
  const jobs: Job[] = [];
  let lastInterrupted = false;

  app.post<{ Body: Txt2ImgBody }>('/sdapi/v1/txt2img', { schema: { body: TXT2IMG_BODY } }, async (request, reply) => {
    const b = request.body;
    const requests = txt2imgRequests(ctx, b);
    const progress: Job['progress'] = { step: 0, total: requests[0]!.steps };
    const call = submitCall(ctx, 'txt2img', requests, reply, {
      progress: (step, total) => {
        progress.step = step;
        progress.total = total;
      },
      // The batch's first image stands for it, as A1111's live preview shows one image.
      preview: (index, _step, preview) => {
        if (index === 0) progress.preview = preview;
      },
    });
    const job: Job = { call, startedAt: performance.now(), timestamp: timestamp(new Date()), progress };
    jobs.push(job);
    lastInterrupted = false;
    const first = requests[0]!;
    const parameters = {
      ...b,
      seed: b.seed ?? -1,
      steps: first.steps,
      cfg_scale: first.guidanceScale,
      width: first.width,
      height: first.height,
    };
    try {
      const images = (await call.result).map((imgs) => imgs[0]!);
      const delivered = images.flatMap((img, i) => (img.png.length ? [{ img, req: requests[i]! }] : []));
      const refused = images.flatMap((img) =>
        img.png.length ? [] : [{ seed: img.seed.toString(), safety: img.safety }],
      );
      const texts = delivered.map(({ img, req }) => infotext(req, img));
      const info = {
        prompt: first.prompt,
        all_prompts: delivered.map(() => first.prompt),
        negative_prompt: first.negativePrompt,
        all_negative_prompts: delivered.map(() => first.negativePrompt),
        seed: Number(first.seed),
        all_seeds: delivered.map(({ img }) => Number(img.seed)),
        subseed: -1,
        all_subseeds: delivered.map(() => -1),
        subseed_strength: 0,
        width: first.width,
        height: first.height,
        sampler_name: a1111SamplerName(first.scheduler).sampler,
        cfg_scale: first.guidanceScale,
        steps: first.steps,
        batch_size: b.batch_size ?? 1,
        clip_skip: first.clipSkip || 1,
        sd_model_name: first.pipeline,
        text_encoder: first.encoder,
        index_of_first_image: 0,
        infotexts: texts,
        job_timestamp: job.timestamp,
        safety: delivered.map(({ img }) => img.safety ?? null),
        refused,
      };
      return {
        images: delivered.map(({ img }, i) => pngBase64(img, texts[i]!)),
        parameters,
        info: JSON.stringify(info),
      };
    } catch (e) {
      // A1111 answers an interrupted txt2img with what it has; a cancelled request here has no finished image.
      if ((e as { interrupted?: boolean }).interrupted) {
        return {
          images: [],
          parameters,
          info: JSON.stringify({ interrupted: true, seed: Number(first.seed), job_timestamp: job.timestamp }),
        };
      }
      throw e;
    } finally {
      jobs.splice(jobs.indexOf(job), 1);
    }
  });

  app.get('/sdapi/v1/progress', async (request) => {
    const skip = (request.query as { skip_current_image?: string }).skip_current_image === 'true';
    const job = jobs[0];
    const state = {
      skipped: false,
      interrupted: lastInterrupted,
      stopping_generation: false,
      job: job ? `txt2img(${job.timestamp})` : '',
      job_count: jobs.length,
      job_timestamp: job?.timestamp ?? '0',
      job_no: 0,
      sampling_step: job?.progress.step ?? 0,
      sampling_steps: job?.progress.total ?? 0,
    };
    if (!job) return { progress: 0, eta_relative: 0, state, current_image: null, textinfo: null };
    const { step, total, preview } = job.progress;
    const progress = total ? step / total : 0;
    const elapsed = (performance.now() - job.startedAt) / 1000;
    const image = !skip && preview ? Buffer.from(preview.png).toString('base64') : null;
    return {
      progress,
      eta_relative: progress > 0 ? elapsed / progress - elapsed : 0,
      state,
      current_image: image,
      textinfo: step ? `Step ${step}/${total}` : 'Waiting...',
    };
  });

  app.post('/sdapi/v1/interrupt', async () => {
    const job = jobs[0];
    if (job) {
      lastInterrupted = true;
      job.call.interrupt();
    }
    return {};
  });

  app.get('/sdapi/v1/sd-models', async () =>
    ctx.models.pipelines.map((p) => ({
      title: p.name,
      model_name: p.name,
      hash: null,
      sha256: null,
      filename: p.name,
      config: null,
    })),
  );

  app.get('/sdapi/v1/samplers', async () =>
    A1111_SAMPLERS.map((s) => ({ name: s.name, aliases: s.aliases, options: {} })),
  );

  app.get('/sdapi/v1/options', async () => ({
    sd_model_checkpoint: ctx.models.defaultPipeline,
    CLIP_stop_at_last_layers: 1,
  }));
}
