// Original file: proto/safesd/v1/diffusion.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { CompareEvent as _safesd_v1_CompareEvent, CompareEvent__Output as _safesd_v1_CompareEvent__Output } from '../../safesd/v1/CompareEvent.js';
import type { CompareRequest as _safesd_v1_CompareRequest, CompareRequest__Output as _safesd_v1_CompareRequest__Output } from '../../safesd/v1/CompareRequest.js';
import type { GenerateEvent as _safesd_v1_GenerateEvent, GenerateEvent__Output as _safesd_v1_GenerateEvent__Output } from '../../safesd/v1/GenerateEvent.js';
import type { GenerateRequest as _safesd_v1_GenerateRequest, GenerateRequest__Output as _safesd_v1_GenerateRequest__Output } from '../../safesd/v1/GenerateRequest.js';
import type { ListModelsRequest as _safesd_v1_ListModelsRequest, ListModelsRequest__Output as _safesd_v1_ListModelsRequest__Output } from '../../safesd/v1/ListModelsRequest.js';
import type { ListModelsResponse as _safesd_v1_ListModelsResponse, ListModelsResponse__Output as _safesd_v1_ListModelsResponse__Output } from '../../safesd/v1/ListModelsResponse.js';

/**
 * Text-to-image generation with a text encoder chosen per request: the original CLIP or a Safe-CLIP encoder.
 */
export interface DiffusionClient extends grpc.Client {
  /**
   * The same prompt, seed and initial noise through two or more encoders; the images side by side in one result.
   */
  Compare(argument: _safesd_v1_CompareRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_safesd_v1_CompareEvent__Output>;
  Compare(argument: _safesd_v1_CompareRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_safesd_v1_CompareEvent__Output>;
  /**
   * The same prompt, seed and initial noise through two or more encoders; the images side by side in one result.
   */
  compare(argument: _safesd_v1_CompareRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_safesd_v1_CompareEvent__Output>;
  compare(argument: _safesd_v1_CompareRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_safesd_v1_CompareEvent__Output>;
  
  /**
   * Generate images for one prompt; streams queue position and denoising progress, then the result.
   */
  Generate(argument: _safesd_v1_GenerateRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_safesd_v1_GenerateEvent__Output>;
  Generate(argument: _safesd_v1_GenerateRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_safesd_v1_GenerateEvent__Output>;
  /**
   * Generate images for one prompt; streams queue position and denoising progress, then the result.
   */
  generate(argument: _safesd_v1_GenerateRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_safesd_v1_GenerateEvent__Output>;
  generate(argument: _safesd_v1_GenerateRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_safesd_v1_GenerateEvent__Output>;
  
  /**
   * Pipelines and text encoders this server offers.
   */
  ListModels(argument: _safesd_v1_ListModelsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_safesd_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  ListModels(argument: _safesd_v1_ListModelsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_safesd_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  ListModels(argument: _safesd_v1_ListModelsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_safesd_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  ListModels(argument: _safesd_v1_ListModelsRequest, callback: grpc.requestCallback<_safesd_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Pipelines and text encoders this server offers.
   */
  listModels(argument: _safesd_v1_ListModelsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_safesd_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  listModels(argument: _safesd_v1_ListModelsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_safesd_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  listModels(argument: _safesd_v1_ListModelsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_safesd_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  listModels(argument: _safesd_v1_ListModelsRequest, callback: grpc.requestCallback<_safesd_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  
}

/**
 * Text-to-image generation with a text encoder chosen per request: the original CLIP or a Safe-CLIP encoder.
 */
export interface DiffusionHandlers extends grpc.UntypedServiceImplementation {
  /**
   * The same prompt, seed and initial noise through two or more encoders; the images side by side in one result.
   */
  Compare: grpc.handleServerStreamingCall<_safesd_v1_CompareRequest__Output, _safesd_v1_CompareEvent>;
  
  /**
   * Generate images for one prompt; streams queue position and denoising progress, then the result.
   */
  Generate: grpc.handleServerStreamingCall<_safesd_v1_GenerateRequest__Output, _safesd_v1_GenerateEvent>;
  
  /**
   * Pipelines and text encoders this server offers.
   */
  ListModels: grpc.handleUnaryCall<_safesd_v1_ListModelsRequest__Output, _safesd_v1_ListModelsResponse>;
  
}

export interface DiffusionDefinition extends grpc.ServiceDefinition {
  Compare: MethodDefinition<_safesd_v1_CompareRequest, _safesd_v1_CompareEvent, _safesd_v1_CompareRequest__Output, _safesd_v1_CompareEvent__Output>
  Generate: MethodDefinition<_safesd_v1_GenerateRequest, _safesd_v1_GenerateEvent, _safesd_v1_GenerateRequest__Output, _safesd_v1_GenerateEvent__Output>
  ListModels: MethodDefinition<_safesd_v1_ListModelsRequest, _safesd_v1_ListModelsResponse, _safesd_v1_ListModelsRequest__Output, _safesd_v1_ListModelsResponse__Output>
}
