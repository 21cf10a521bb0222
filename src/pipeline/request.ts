import { randomBytes } from 'node:crypto';
import { InvalidRequestError, type GenerationRequest, type ModelsInfo, type PartialRequest } from './engine-api.js';
import { SCHEDULER_NAMES } from './schedulers/index.js';

export const LIMITS = { maxSide: 2048, maxSteps: 1000, maxImages: 16, maxPromptChars: 4096, maxCompareEncoders: 8 };

/** 53 bits, so clients that read the returned seed as a JS number can replay it exactly. */
export function randomSeed(): bigint {
  return randomBytes(8).readBigUInt64BE() >> 11n;
}

function bad(msg: string): never {
  throw new InvalidRequestError(msg);
}

/**
 * Fill a request's defaults from the pipeline it names and check every field: the one validation the CLI, the
 * engine and the server (on its main thread, from the ModelsInfo the workers reported) all use.
 */
export function resolveRequest(models: ModelsInfo, r: PartialRequest): GenerationRequest {
  const pipelineName = r.pipeline || models.defaultPipeline;
  const pipeline = models.pipelines.find((p) => p.name === pipelineName);
  if (!pipeline)
    bad(`unknown pipeline '${pipelineName}' (available: ${models.pipelines.map((p) => p.name).join(', ')})`);
  const encoderName = r.encoder || pipeline.defaultEncoder;
  const own = models.encoders.filter((e) => e.pipeline === pipeline.name);
  const encoder = own.find((e) => e.name === encoderName);
  if (!encoder)
    bad(
      `unknown encoder '${encoderName}' for pipeline '${pipeline.name}' (available: ` +
        `${own.map((e) => e.name).join(', ')})`,
    );
  const req: GenerationRequest = {
    pipeline: pipeline.name,
    encoder: encoder.name,
    prompt: r.prompt ?? '',
    negativePrompt: r.negativePrompt ?? '',
    seed: r.seed ?? randomSeed(),
    steps: r.steps || pipeline.defaultSteps,
    guidanceScale: r.guidanceScale ?? pipeline.defaultGuidanceScale,
    width: r.width || pipeline.defaultWidth,
    height: r.height || pipeline.defaultHeight,
    scheduler: r.scheduler || pipeline.defaultScheduler,
    numImages: r.numImages || 1,
    clipSkip: r.clipSkip ?? 0,
  };
  if (!req.prompt.trim()) bad('prompt is empty');
  if (req.prompt.length > LIMITS.maxPromptChars || req.negativePrompt.length > LIMITS.maxPromptChars)
    bad(`prompts are limited to ${LIMITS.maxPromptChars} characters`);
  for (const [k, v] of [
    ['width', req.width],
    ['height', req.height],
  ] as const) {
    if (!Number.isInteger(v) || v <= 0 || v % 8 !== 0) bad(`${k} ${v} is not a positive multiple of 8`);
    if (v > LIMITS.maxSide) bad(`${k} ${v} exceeds the limit of ${LIMITS.maxSide}`);
  }
  const pixels = req.width * req.height;
  const { maxPixels } = pipeline.limits;
  if (pixels > maxPixels) {
    bad(
      `${req.width}x${req.height} is ${pixels} pixels, over pipeline '${pipeline.name}''s limit of ` +
        `${maxPixels} per image (manifest limits.max_pixels)`,
    );
  }
  if (!Number.isInteger(req.steps) || req.steps < 1 || req.steps > LIMITS.maxSteps)
    bad(`steps ${req.steps} is outside 1..${LIMITS.maxSteps}`);
  if (!Number.isFinite(req.guidanceScale) || req.guidanceScale < 0)
    bad(`guidance scale ${req.guidanceScale} must be a finite number >= 0`);
  if (!SCHEDULER_NAMES.includes(req.scheduler))
    bad(`unknown scheduler '${req.scheduler}' (one of ${SCHEDULER_NAMES.join(', ')})`);
  const maxSteps = pipeline.maxSteps?.[req.scheduler] ?? LIMITS.maxSteps;
  if (req.steps > maxSteps) {
    bad(
      `steps ${req.steps} is outside 1..${maxSteps} for scheduler '${req.scheduler}' ` +
        `with pipeline '${pipeline.name}': ` +
        "beyond that its schedule repeats a noise level or runs past the model's training timesteps",
    );
  }
  if (!Number.isInteger(req.numImages) || req.numImages < 1 || req.numImages > LIMITS.maxImages)
    bad(`num_images ${req.numImages} is outside 1..${LIMITS.maxImages}`);
  if (!Number.isInteger(req.clipSkip) || req.clipSkip < 0 || req.clipSkip > encoder.layers)
    bad(`clip skip ${req.clipSkip} is outside 0..${encoder.layers}`);
  if (req.seed < 0n || req.seed >= 2n ** 64n) bad(`seed ${req.seed} is outside 0..2^64-1`);
  return req;
}
