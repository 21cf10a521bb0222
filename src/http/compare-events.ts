/**
 * The JSON the page and other clients of `/v1/pipelines` and `/v1/compare` receive; the page imports these types.
 * Images travel as base64 PNGs with their generation settings and safety verdict.
 */
import type { EncoderInfo, PipelineInfo } from '../pipeline/engine-api.js';
import type { SafetyVerdict } from '../pipeline/safety.js';

export interface PipelinesResponse {
  default_pipeline: string;
  pipelines: Array<PipelineInfo & { encoders: EncoderInfo[] }>;
  schedulers: string[];
}

export interface ImageJson {
  /** Base64 PNG; empty when the safety check refused the image. */
  png: string;
  seed: string;
  width: number;
  height: number;
  pipeline: string;
  encoder: string;
  scheduler: string;
  steps: number;
  guidance_scale: number;
  /** A1111's infotext: prompt, negative prompt, then `Steps: …, Sampler: …` (also the PNG's `parameters`). */
  parameters: string;
  safety: SafetyVerdict | null;
}

export interface CompareResultJson {
  seed: string;
  columns: Array<{ encoder: string; images: ImageJson[] }>;
}

/** One Server-Sent Event of `/v1/compare`: `event: <name>` then `data: <JSON>`. */
export type CompareEvent =
  | { event: 'queued'; data: { position: number } }
  | { event: 'progress'; data: { step: number; total: number } }
  | {
      event: 'preview';
      data: { column: number; encoder: string; step: number; png: string; width: number; height: number };
    }
  | { event: 'result'; data: CompareResultJson }
  | { event: 'error'; data: { status: number; error: { message: string; type: string } } };
