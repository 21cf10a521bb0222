// Original file: proto/safesd/v1/diffusion.proto

import type { SafetyVerdict as _safesd_v1_SafetyVerdict, SafetyVerdict__Output as _safesd_v1_SafetyVerdict__Output } from '../../safesd/v1/SafetyVerdict.js';
import type { Long } from '@grpc/proto-loader';

export interface Image {
  'png'?: (Buffer | Uint8Array | string);
  'seed'?: (number | string | Long);
  'width'?: (number);
  'height'?: (number);
  'encoder'?: (string);
  'scheduler'?: (string);
  'steps'?: (number);
  'guidanceScale'?: (number | string);
  'pipeline'?: (string);
  /**
   * The verdict of the pipeline's safety classifier; unset when the pipeline names none.
   */
  'safety'?: (_safesd_v1_SafetyVerdict | null);
}

export interface Image__Output {
  'png': (Buffer);
  'seed': (string);
  'width': (number);
  'height': (number);
  'encoder': (string);
  'scheduler': (string);
  'steps': (number);
  'guidanceScale': (number);
  'pipeline': (string);
  /**
   * The verdict of the pipeline's safety classifier; unset when the pipeline names none.
   */
  'safety': (_safesd_v1_SafetyVerdict__Output | null);
}
