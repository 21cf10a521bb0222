// Original file: proto/safesd/v1/diffusion.proto


export interface SafetyVerdict {
  /**
   * The classifier's name, e.g. "nsfwjs" or an ONNX descriptor's name.
   */
  'classifier'?: (string);
  'flagged'?: (boolean);
  /**
   * Class name -> probability.
   */
  'scores'?: ({[key: string]: number | string});
  /**
   * The pipeline's action on flagged images: "flag" (returned as made), "blur", or "refuse" (png left empty).
   */
  'action'?: (string);
  /**
   * What this image's png holds: "image" (as made), "blurred", or "none" (refused).
   */
  'delivered'?: (string);
  /**
   * One readable line when flagged.
   */
  'reason'?: (string);
}

export interface SafetyVerdict__Output {
  /**
   * The classifier's name, e.g. "nsfwjs" or an ONNX descriptor's name.
   */
  'classifier': (string);
  'flagged': (boolean);
  /**
   * Class name -> probability.
   */
  'scores': ({[key: string]: number});
  /**
   * The pipeline's action on flagged images: "flag" (returned as made), "blur", or "refuse" (png left empty).
   */
  'action': (string);
  /**
   * What this image's png holds: "image" (as made), "blurred", or "none" (refused).
   */
  'delivered': (string);
  /**
   * One readable line when flagged.
   */
  'reason': (string);
}
