// Original file: proto/safesd/v1/diffusion.proto


export interface Progress {
  'step'?: (number);
  'total'?: (number);
}

export interface Progress__Output {
  'step': (number);
  'total': (number);
}
