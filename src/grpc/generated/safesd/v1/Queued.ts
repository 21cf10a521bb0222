// Original file: proto/safesd/v1/diffusion.proto


export interface Queued {
  /**
   * Requests ahead of this one; 0 = next to run.
   */
  'position'?: (number);
}

export interface Queued__Output {
  /**
   * Requests ahead of this one; 0 = next to run.
   */
  'position': (number);
}
