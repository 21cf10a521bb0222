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
}
