// Original file: proto/safesd/v1/diffusion.proto

import type { Image as _safesd_v1_Image, Image__Output as _safesd_v1_Image__Output } from '../../safesd/v1/Image.js';

export interface GenerateResult {
  'images'?: (_safesd_v1_Image)[];
}

export interface GenerateResult__Output {
  'images': (_safesd_v1_Image__Output)[];
}
