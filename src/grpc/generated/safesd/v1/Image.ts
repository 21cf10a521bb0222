// Original file: proto/safesd/v1/diffusion.proto

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
}
