// Original file: proto/safesd/v1/diffusion.proto

import type { Long } from '@grpc/proto-loader';

export interface GenerateRequest {
  /**
   * Pipeline name from ListModels; empty = the server's default pipeline.
   */
  'pipeline'?: (string);
  /**
   * Encoder name from ListModels; empty = the pipeline's default encoder.
   */
  'encoder'?: (string);
  'prompt'?: (string);
  'negativePrompt'?: (string);
  /**
   * Absent = random; the seed used is always returned.
   */
  'seed'?: (number | string | Long);
  /**
   * Zero = the pipeline's default, for this and every numeric field below.
   */
  'steps'?: (number);
  'guidanceScale'?: (number | string);
  'width'?: (number);
  'height'?: (number);
  /**
   * pndm, ddim, euler, euler-a, lms, dpmpp-2m, dpmpp-2m-karras, dpmpp-sde, unipc, heun, ddpm; empty = the pipeline's.
   */
  'scheduler'?: (string);
  'numImages'?: (number);
  /**
   * 0 or 1 = the last layer; 2 = the penultimate layer, as diffusers' clip_skip + 1.
   */
  'clipSkip'?: (number);
  /**
   * Stream a Preview after each step, where the pipeline allows them (ListModels: PipelineInfo.previews).
   */
  'previews'?: (boolean);
  '_seed'?: "seed";
  '_guidanceScale'?: "guidanceScale";
}

export interface GenerateRequest__Output {
  /**
   * Pipeline name from ListModels; empty = the server's default pipeline.
   */
  'pipeline': (string);
  /**
   * Encoder name from ListModels; empty = the pipeline's default encoder.
   */
  'encoder': (string);
  'prompt': (string);
  'negativePrompt': (string);
  /**
   * Absent = random; the seed used is always returned.
   */
  'seed'?: (string);
  /**
   * Zero = the pipeline's default, for this and every numeric field below.
   */
  'steps': (number);
  'guidanceScale'?: (number);
  'width': (number);
  'height': (number);
  /**
   * pndm, ddim, euler, euler-a, lms, dpmpp-2m, dpmpp-2m-karras, dpmpp-sde, unipc, heun, ddpm; empty = the pipeline's.
   */
  'scheduler': (string);
  'numImages': (number);
  /**
   * 0 or 1 = the last layer; 2 = the penultimate layer, as diffusers' clip_skip + 1.
   */
  'clipSkip': (number);
  /**
   * Stream a Preview after each step, where the pipeline allows them (ListModels: PipelineInfo.previews).
   */
  'previews': (boolean);
  '_seed'?: "seed";
  '_guidanceScale'?: "guidanceScale";
}
