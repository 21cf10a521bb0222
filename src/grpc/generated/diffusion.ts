import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { CompareEvent as _safesd_v1_CompareEvent, CompareEvent__Output as _safesd_v1_CompareEvent__Output } from './safesd/v1/CompareEvent.js';
import type { CompareRequest as _safesd_v1_CompareRequest, CompareRequest__Output as _safesd_v1_CompareRequest__Output } from './safesd/v1/CompareRequest.js';
import type { CompareResult as _safesd_v1_CompareResult, CompareResult__Output as _safesd_v1_CompareResult__Output } from './safesd/v1/CompareResult.js';
import type { DiffusionClient as _safesd_v1_DiffusionClient, DiffusionDefinition as _safesd_v1_DiffusionDefinition } from './safesd/v1/Diffusion.js';
import type { EncoderImages as _safesd_v1_EncoderImages, EncoderImages__Output as _safesd_v1_EncoderImages__Output } from './safesd/v1/EncoderImages.js';
import type { EncoderInfo as _safesd_v1_EncoderInfo, EncoderInfo__Output as _safesd_v1_EncoderInfo__Output } from './safesd/v1/EncoderInfo.js';
import type { GenerateEvent as _safesd_v1_GenerateEvent, GenerateEvent__Output as _safesd_v1_GenerateEvent__Output } from './safesd/v1/GenerateEvent.js';
import type { GenerateRequest as _safesd_v1_GenerateRequest, GenerateRequest__Output as _safesd_v1_GenerateRequest__Output } from './safesd/v1/GenerateRequest.js';
import type { GenerateResult as _safesd_v1_GenerateResult, GenerateResult__Output as _safesd_v1_GenerateResult__Output } from './safesd/v1/GenerateResult.js';
import type { Image as _safesd_v1_Image, Image__Output as _safesd_v1_Image__Output } from './safesd/v1/Image.js';
import type { ListModelsRequest as _safesd_v1_ListModelsRequest, ListModelsRequest__Output as _safesd_v1_ListModelsRequest__Output } from './safesd/v1/ListModelsRequest.js';
import type { ListModelsResponse as _safesd_v1_ListModelsResponse, ListModelsResponse__Output as _safesd_v1_ListModelsResponse__Output } from './safesd/v1/ListModelsResponse.js';
import type { PipelineInfo as _safesd_v1_PipelineInfo, PipelineInfo__Output as _safesd_v1_PipelineInfo__Output } from './safesd/v1/PipelineInfo.js';
import type { Preview as _safesd_v1_Preview, Preview__Output as _safesd_v1_Preview__Output } from './safesd/v1/Preview.js';
import type { Progress as _safesd_v1_Progress, Progress__Output as _safesd_v1_Progress__Output } from './safesd/v1/Progress.js';
import type { Queued as _safesd_v1_Queued, Queued__Output as _safesd_v1_Queued__Output } from './safesd/v1/Queued.js';
import type { SafetyVerdict as _safesd_v1_SafetyVerdict, SafetyVerdict__Output as _safesd_v1_SafetyVerdict__Output } from './safesd/v1/SafetyVerdict.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  safesd: {
    v1: {
      CompareEvent: MessageTypeDefinition<_safesd_v1_CompareEvent, _safesd_v1_CompareEvent__Output>
      CompareRequest: MessageTypeDefinition<_safesd_v1_CompareRequest, _safesd_v1_CompareRequest__Output>
      CompareResult: MessageTypeDefinition<_safesd_v1_CompareResult, _safesd_v1_CompareResult__Output>
      /**
       * Text-to-image generation with a text encoder chosen per request: the original CLIP or a Safe-CLIP encoder.
       */
      Diffusion: SubtypeConstructor<typeof grpc.Client, _safesd_v1_DiffusionClient> & { service: _safesd_v1_DiffusionDefinition }
      EncoderImages: MessageTypeDefinition<_safesd_v1_EncoderImages, _safesd_v1_EncoderImages__Output>
      EncoderInfo: MessageTypeDefinition<_safesd_v1_EncoderInfo, _safesd_v1_EncoderInfo__Output>
      GenerateEvent: MessageTypeDefinition<_safesd_v1_GenerateEvent, _safesd_v1_GenerateEvent__Output>
      GenerateRequest: MessageTypeDefinition<_safesd_v1_GenerateRequest, _safesd_v1_GenerateRequest__Output>
      GenerateResult: MessageTypeDefinition<_safesd_v1_GenerateResult, _safesd_v1_GenerateResult__Output>
      Image: MessageTypeDefinition<_safesd_v1_Image, _safesd_v1_Image__Output>
      ListModelsRequest: MessageTypeDefinition<_safesd_v1_ListModelsRequest, _safesd_v1_ListModelsRequest__Output>
      ListModelsResponse: MessageTypeDefinition<_safesd_v1_ListModelsResponse, _safesd_v1_ListModelsResponse__Output>
      PipelineInfo: MessageTypeDefinition<_safesd_v1_PipelineInfo, _safesd_v1_PipelineInfo__Output>
      Preview: MessageTypeDefinition<_safesd_v1_Preview, _safesd_v1_Preview__Output>
      Progress: MessageTypeDefinition<_safesd_v1_Progress, _safesd_v1_Progress__Output>
      Queued: MessageTypeDefinition<_safesd_v1_Queued, _safesd_v1_Queued__Output>
      SafetyVerdict: MessageTypeDefinition<_safesd_v1_SafetyVerdict, _safesd_v1_SafetyVerdict__Output>
    }
  }
}

