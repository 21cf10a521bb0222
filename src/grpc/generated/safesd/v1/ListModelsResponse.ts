// Original file: proto/safesd/v1/diffusion.proto

import type { PipelineInfo as _safesd_v1_PipelineInfo, PipelineInfo__Output as _safesd_v1_PipelineInfo__Output } from '../../safesd/v1/PipelineInfo.js';
import type { EncoderInfo as _safesd_v1_EncoderInfo, EncoderInfo__Output as _safesd_v1_EncoderInfo__Output } from '../../safesd/v1/EncoderInfo.js';

export interface ListModelsResponse {
  'pipelines'?: (_safesd_v1_PipelineInfo)[];
  'encoders'?: (_safesd_v1_EncoderInfo)[];
}

export interface ListModelsResponse__Output {
  'pipelines': (_safesd_v1_PipelineInfo__Output)[];
  'encoders': (_safesd_v1_EncoderInfo__Output)[];
}
