// Original file: proto/safesd/v1/diffusion.proto


export interface EncoderInfo {
  'name'?: (string);
  'pipeline'?: (string);
  'hiddenSize'?: (number);
  /**
   * The folder the encoder was loaded from, relative to the manifest.
   */
  'source'?: (string);
  'safeClip'?: (boolean);
}

export interface EncoderInfo__Output {
  'name': (string);
  'pipeline': (string);
  'hiddenSize': (number);
  /**
   * The folder the encoder was loaded from, relative to the manifest.
   */
  'source': (string);
  'safeClip': (boolean);
}
