import { InputError } from '../core/errors.js';

/**
 * The contract between the server and the generation engine that runs inside each inference worker thread.
 * The server owns queueing, batching decisions, cancellation and the gRPC surface; the engine owns the models.
 */
import type { SafetyAction, SafetyVerdict } from './safety.js';

export interface GenerationRequest {
  pipeline: string;
  encoder: string;
  prompt: string;
  negativePrompt: string;
  seed: bigint;
  steps: number;
  guidanceScale: number;
  width: number;
  height: number;
  scheduler: string;
  numImages: number;
  /** 0 or 1 = last layer, 2 = penultimate, ... */
  clipSkip: number;
}

/** Fields a client may leave unset; the engine fills them from the pipeline's defaults. */
export type PartialRequest = Partial<GenerationRequest> & { prompt: string };

export interface GeneratedImage {
  /** Empty when the pipeline's safety check refused the image (see `safety`). */
  png: Uint8Array;
  seed: bigint;
  width: number;
  height: number;
  encoder: string;
  scheduler: string;
  steps: number;
  guidanceScale: number;
  pipeline: string;
  /** The verdict of the pipeline's safety classifier; absent when the pipeline names none. */
  safety?: SafetyVerdict;
}

/** A cheap RGB picture of a job's current clean-latent estimate, at latent resolution (see preview.ts). */
export interface PreviewImage {
  png: Uint8Array;
  width: number;
  height: number;
}

export interface EncoderInfo {
  name: string;
  pipeline: string;
  hiddenSize: number;
  source: string;
  safeClip: boolean;
  /** Transformer layers of the text tower: the largest clip skip. */
  layers: number;
}

/** What one request or batch of a pipeline may ask for; from the manifest's `limits`, else defaults (manifest.ts). */
export interface PipelineLimits {
  /** Largest width × height of one image. */
  maxPixels: number;
  /**
   * Largest sum of images × width × height over the jobs of one batch (a Compare counts every column): the latents,
   * UNet activations and decoded images of a batch grow with it, so it bounds a batch's memory.
   */
  maxBatchPixels: number;
}

export interface PipelineInfo {
  name: string;
  defaultEncoder: string;
  defaultWidth: number;
  defaultHeight: number;
  defaultSteps: number;
  defaultGuidanceScale: number;
  defaultScheduler: string;
  crossAttentionDim: number;
  /** The safety classifier's name and action; absent when images are not checked. */
  safety?: { classifier: string; action: SafetyAction };
  /** True when the engine sends previews: not when they would show what the safety action hides (blur, refuse). */
  previews?: boolean;
  limits: PipelineLimits;
  /**
   * Per scheduler name, the most steps its schedule runs with this model's config (PNDM, DDIM and DDPM run past the
   * training timesteps at 1000 with SD's steps_offset 1; the multistep solvers repeat a noise level). Absent where
   * the info came from elsewhere (a remote server's ListModels): the engine still refuses such counts.
   */
  maxSteps?: Record<string, number>;
}

export interface ModelsInfo {
  defaultPipeline: string;
  pipelines: PipelineInfo[];
  encoders: EncoderInfo[];
}

/** Bad request contents: the server maps it to INVALID_ARGUMENT, the CLI to exit code 2. */
export class InvalidRequestError extends InputError {
  override name = 'InvalidRequestError';
}

export interface BatchJob {
  id: string;
  request: GenerationRequest;
  /** Someone watches this job's previews: only such jobs get one per step (a projection and a PNG each). */
  previews?: boolean;
}

export interface EngineHooks {
  onProgress(jobId: string, step: number, total: number): void;
  /** Checked between denoising steps: a cancelled job leaves the batch within one step. */
  isCancelled(jobId: string): boolean;
  /** A preview per job and step, where the pipeline allows them (`PipelineInfo.previews`). */
  onPreview?(jobId: string, step: number, preview: PreviewImage): void;
  /** Awaited before each denoising step: where a worker running several batches lets another one step first. */
  yieldBetweenSteps?(): Promise<void>;
}

/** Why a job produced no images: withdrawn, refused by validation, or broken while running. */
export type JobFailure = 'cancelled' | 'invalid' | 'error';
export type JobOutcome = { ok: true; images: GeneratedImage[] } | { ok: false; failure: JobFailure; message: string };

export interface Engine {
  models(): ModelsInfo;
  /** Fill defaults and validate; throws InvalidRequestError with a readable message. */
  resolve(request: PartialRequest): GenerationRequest;
  /**
   * Run jobs whose `batchKey` is equal together, sharing UNet calls. Every job gets its own outcome; one job's
   * failure does not fail the others.
   */
  runBatch(jobs: BatchJob[], hooks: EngineHooks): Promise<Map<string, JobOutcome>>;
  close(): Promise<void>;
}

/** Requests with equal keys can share UNet calls: same pipeline, size, step count and scheduler. */
export function batchKey(r: GenerationRequest): string {
  return [r.pipeline, r.width, r.height, r.steps, r.scheduler].join('|');
}

/** What a log line says of an accepted request: one Generate, or a Compare's requests (alike but for the encoder). */
export function describeRequests(requests: GenerationRequest[]): Record<string, unknown> {
  const first = requests[0]!;
  return {
    encoders: requests.map((r) => r.encoder),
    pipeline: first.pipeline,
    seed: first.seed.toString(),
    steps: first.steps,
    size: `${first.width}x${first.height}`,
    scheduler: first.scheduler,
    numImages: first.numImages,
  };
}
