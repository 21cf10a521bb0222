// Original file: proto/safesd/v1/diffusion.proto

import type { Long } from '@grpc/proto-loader';

export interface CompareRequest {
  'pipeline'?: (string);
  /**
   * Two or more encoder names; the same name may appear twice.
   */
  'encoders'?: (string)[];
  'prompt'?: (string);
  'negativePrompt'?: (string);
  'seed'?: (number | string | Long);
  'steps'?: (number);
  'guidanceScale'?: (number | string);
  'width'?: (number);
  'height'?: (number);
  'scheduler'?: (string);
  'numImages'?: (number);
  'clipSkip'?: (number);
  /**
   * As in GenerateRequest: a Preview per column after each step.
   */
  'previews'?: (boolean);
  '_seed'?: "seed";
  '_guidanceScale'?: "guidanceScale";
}

export interface CompareRequest__Output {
  'pipeline': (string);
  /**
   * Two or more encoder names; the same name may appear twice.
   */
  'encoders': (string)[];
  'prompt': (string);
  'negativePrompt': (string);
  'seed'?: (string);
  'steps': (number);
  'guidanceScale'?: (number);
  'width': (number);
  'height': (number);
  'scheduler': (string);
  'numImages': (number);
  'clipSkip': (number);
  /**
   * As in GenerateRequest: a Preview per column after each step.
   */
  'previews': (boolean);
  '_seed'?: "seed";
  '_guidanceScale'?: "guidanceScale";
}
