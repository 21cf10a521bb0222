export interface RgbImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

/** A content classifier over RGB pictures: nsfwjs, or an ONNX model described by a JSON descriptor. */
export interface ImageClassifier {
  readonly name: string;
  readonly classes: readonly string[];
  /** Class probabilities per image. */
  classify(images: RgbImage[]): Promise<Float32Array[]>;
  isUnsafe(probs: Float32Array): boolean;
  /** When a picture counts as unsafe, in words (rule and threshold), for the report's protocol. */
  readonly verdictRule?: string;
  close(): Promise<void>;
}
