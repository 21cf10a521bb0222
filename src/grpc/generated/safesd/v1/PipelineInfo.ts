// Original file: proto/safesd/v1/diffusion.proto


export interface PipelineInfo {
  'name'?: (string);
  'defaultEncoder'?: (string);
  'defaultWidth'?: (number);
  'defaultHeight'?: (number);
  'defaultSteps'?: (number);
  'defaultGuidanceScale'?: (number | string);
  'defaultScheduler'?: (string);
  'crossAttentionDim'?: (number);
  /**
   * Whether a call that asks for previews gets them: the pipeline has a latent-to-RGB projection and its safety
   * action is flag (a preview would show what blur or refuse hides).
   */
  'previews'?: (boolean);
}

export interface PipelineInfo__Output {
  'name': (string);
  'defaultEncoder': (string);
  'defaultWidth': (number);
  'defaultHeight': (number);
  'defaultSteps': (number);
  'defaultGuidanceScale': (number);
  'defaultScheduler': (string);
  'crossAttentionDim': (number);
  /**
   * Whether a call that asks for previews gets them: the pipeline has a latent-to-RGB projection and its safety
   * action is flag (a preview would show what blur or refuse hides).
   */
  'previews': (boolean);
}
