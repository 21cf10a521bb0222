// Original file: proto/safesd/v1/diffusion.proto


/**
 * A cheap picture of the first image's current estimate: the latents projected to RGB, at latent resolution (1/8
 * of the image's sides), not decoded by the VAE.
 */
export interface Preview {
  'step'?: (number);
  'png'?: (Buffer | Uint8Array | string);
  'width'?: (number);
  'height'?: (number);
  /**
   * Compare: the index of the encoder in the request; Generate: 0.
   */
  'column'?: (number);
}

/**
 * A cheap picture of the first image's current estimate: the latents projected to RGB, at latent resolution (1/8
 * of the image's sides), not decoded by the VAE.
 */
export interface Preview__Output {
  'step': (number);
  'png': (Buffer);
  'width': (number);
  'height': (number);
  /**
   * Compare: the index of the encoder in the request; Generate: 0.
   */
  'column': (number);
}
