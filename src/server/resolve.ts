/**
 * Request validation and defaults on the main thread. Workers may be blocked inside a denoising step for seconds,
 * so the server cannot ask an engine to validate; it checks requests against the `ModelsInfo` the workers reported
 * at start-up. The worker still passes each request through `engine.resolve` before running it, so the engine has
 * the last word.
 */
import { randomBytes } from 'node:crypto';
import { InvalidRequestError, type GenerationRequest, type ModelsInfo } from '../pipeline/engine-api.js';
import type { CompareRequestMsg, GenerateRequestMsg } from './proto.js';

export const SCHEDULERS = [
  'pndm', 'ddim', 'euler', 'euler-a', 'lms', 'dpmpp-2m', 'dpmpp-2m-karras', 'dpmpp-sde', 'unipc', 'heun', 'ddpm',
] as const;

export const MAX_SIDE = 2048;
export const MAX_STEPS = 1000;
export const MAX_IMAGES = 16;
export const MAX_COMPARE_ENCODERS = 8;
export const MAX_PROMPT_CHARS = 4096;

type Common = Omit<GenerateRequestMsg, 'encoder'>;

/** Validate a Generate request and fill the pipeline's defaults; throws InvalidRequestError. */
export function resolveGenerate(models: ModelsInfo, msg: GenerateRequestMsg): GenerationRequest {
  const base = resolveCommon(models, msg);
  return { ...base, encoder: resolveEncoder(models, base.pipeline, msg.encoder) };
}

/** One request per encoder, in the request's order, all with the same seed. */
export function resolveCompare(models: ModelsInfo, msg: CompareRequestMsg): GenerationRequest[] {
  const encoders = msg.encoders ?? [];
  if (encoders.length < 2) {
    throw new InvalidRequestError(`compare needs at least 2 encoders, got ${encoders.length}`);
  }
  if (encoders.length > MAX_COMPARE_ENCODERS) {
    throw new InvalidRequestError(`compare takes at most ${MAX_COMPARE_ENCODERS} encoders, got ${encoders.length}`);
  }
  const base = resolveCommon(models, msg);
  return encoders.map((e) => {
    if (!e) throw new InvalidRequestError('compare encoders must be named (empty name in the list)');
    return { ...base, encoder: resolveEncoder(models, base.pipeline, e) };
  });
}

function resolveCommon(models: ModelsInfo, msg: Common): Omit<GenerationRequest, 'encoder'> {
  if (!msg.prompt || !msg.prompt.trim()) throw new InvalidRequestError('prompt must not be empty');
  if (msg.prompt.length > MAX_PROMPT_CHARS || (msg.negativePrompt ?? '').length > MAX_PROMPT_CHARS) {
    throw new InvalidRequestError(`prompts are limited to ${MAX_PROMPT_CHARS} characters`);
  }
  const pipelineName = msg.pipeline || models.defaultPipeline;
  const pipeline = models.pipelines.find((p) => p.name === pipelineName);
  if (!pipeline) {
    throw new InvalidRequestError(
      `unknown pipeline '${pipelineName}' (available: ${models.pipelines.map((p) => p.name).join(', ')})`,
    );
  }
  const width = side('width', msg.width || pipeline.defaultWidth);
  const height = side('height', msg.height || pipeline.defaultHeight);
  const steps = msg.steps || pipeline.defaultSteps;
  if (!Number.isInteger(steps) || steps < 1 || steps > MAX_STEPS) {
    throw new InvalidRequestError(`steps must be between 1 and ${MAX_STEPS}, got ${steps}`);
  }
  const guidanceScale = msg._guidanceScale ? Number(msg.guidanceScale) : pipeline.defaultGuidanceScale;
  if (!Number.isFinite(guidanceScale)) {
    throw new InvalidRequestError(`guidance_scale must be a finite number, got ${guidanceScale}`);
  }
  const scheduler = msg.scheduler || pipeline.defaultScheduler;
  if (!(SCHEDULERS as readonly string[]).includes(scheduler)) {
    throw new InvalidRequestError(`unknown scheduler '${scheduler}' (available: ${SCHEDULERS.join(', ')})`);
  }
  const numImages = msg.numImages || 1;
  if (numImages > MAX_IMAGES) {
    throw new InvalidRequestError(`num_images must be between 1 and ${MAX_IMAGES}, got ${numImages}`);
  }
  return {
    pipeline: pipeline.name,
    prompt: msg.prompt,
    negativePrompt: msg.negativePrompt ?? '',
    seed: msg._seed && msg.seed !== undefined ? BigInt(msg.seed) : randomSeed(),
    steps,
    guidanceScale,
    width,
    height,
    scheduler,
    numImages,
    clipSkip: msg.clipSkip ?? 0,
  };
}

function side(name: string, value: number): number {
  if (value % 8 !== 0) throw new InvalidRequestError(`${name} must be a multiple of 8, got ${value}`);
  if (value < 8 || value > MAX_SIDE) {
    throw new InvalidRequestError(`${name} must be between 8 and ${MAX_SIDE}, got ${value}`);
  }
  return value;
}

function resolveEncoder(models: ModelsInfo, pipelineName: string, requested: string): string {
  const pipeline = models.pipelines.find((p) => p.name === pipelineName)!;
  const name = requested || pipeline.defaultEncoder;
  const own = models.encoders.filter((e) => e.pipeline === pipelineName);
  if (!own.some((e) => e.name === name)) {
    throw new InvalidRequestError(
      `unknown encoder '${name}' for pipeline '${pipelineName}' (available: ${own.map((e) => e.name).join(', ')})`,
    );
  }
  return name;
}

/** 53 bits, so clients that read the returned seed as a JS number can replay it exactly. */
function randomSeed(): bigint {
  return randomBytes(8).readBigUInt64BE() >> 11n;
}
