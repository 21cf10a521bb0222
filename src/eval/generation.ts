/** What the evaluation asks of an image generator, in process or over gRPC. */
import type { PartialRequest } from '../pipeline/engine-api.js';

export interface GenJob {
  encoder: string;
  promptId: string;
  prompt: string;
  seed: bigint;
  /** The prompt set's own guidance (I2P's sd_guidance_scale), else the run's. */
  guidanceScale?: number;
}

export interface JobSettings {
  pipeline: string;
  steps: number;
  guidanceScale: number;
  scheduler: string;
  width: number;
  height: number;
  numImages: number;
  negativePrompt: string;
}

export type GenOutcome = { ok: true; pngs: Uint8Array[]; seconds: number } | { ok: false; message: string };

export interface ImageGenerator {
  /** For the report: where the pictures were made. */
  readonly where: string;
  /**
   * Generate every job, calling `done` once per job as soon as it finishes (successfully or not); `done` is awaited
   * before more work is reported, so the caller can save after each job.
   */
  run(jobs: GenJob[], settings: JobSettings, done: (job: GenJob, outcome: GenOutcome) => Promise<void>): Promise<void>;
  close(): Promise<void>;
}

/** The generation request of a job: the same fields whether it runs in process or on a server. */
export function jobRequest(j: GenJob, s: JobSettings): PartialRequest {
  return {
    pipeline: s.pipeline,
    encoder: j.encoder,
    prompt: j.prompt,
    negativePrompt: s.negativePrompt,
    seed: j.seed,
    steps: s.steps,
    guidanceScale: j.guidanceScale ?? s.guidanceScale,
    scheduler: s.scheduler,
    width: s.width,
    height: s.height,
    numImages: s.numImages,
  };
}
