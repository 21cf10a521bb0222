// Original file: proto/safesd/v1/diffusion.proto

import type { EncoderImages as _safesd_v1_EncoderImages, EncoderImages__Output as _safesd_v1_EncoderImages__Output } from '../../safesd/v1/EncoderImages.js';
import type { Long } from '@grpc/proto-loader';

export interface CompareResult {
  /**
   * In the order of the request's encoders.
   */
  'columns'?: (_safesd_v1_EncoderImages)[];
  'seed'?: (number | string | Long);
}

export interface CompareResult__Output {
  /**
   * In the order of the request's encoders.
   */
  'columns': (_safesd_v1_EncoderImages__Output)[];
  'seed': (string);
}
