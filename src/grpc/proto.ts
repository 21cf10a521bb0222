/**
 * The gRPC interface of safesd.v1, loaded at runtime from proto/safesd/v1/diffusion.proto with the options below
 * (camelCase fields, 64-bit integers as decimal strings); the same options generate the message types.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import type { CompareEvent__Output } from './generated/safesd/v1/CompareEvent.js';
import type { CompareRequest, CompareRequest__Output } from './generated/safesd/v1/CompareRequest.js';
import type { CompareResult__Output } from './generated/safesd/v1/CompareResult.js';
import type { DiffusionClient, DiffusionHandlers } from './generated/safesd/v1/Diffusion.js';
import type { GenerateEvent__Output } from './generated/safesd/v1/GenerateEvent.js';
import type { GenerateRequest, GenerateRequest__Output } from './generated/safesd/v1/GenerateRequest.js';
import type { Image__Output } from './generated/safesd/v1/Image.js';
import type { ListModelsResponse__Output } from './generated/safesd/v1/ListModelsResponse.js';

export const PROTO_PATH = fileURLToPath(new URL('../../proto/safesd/v1/diffusion.proto', import.meta.url));
export const SERVICE_NAME = 'safesd.v1.Diffusion';

// longs as String: uint64 seeds survive the trip without rounding; oneofs: the `event` discriminator and the
// `_seed` / `_guidanceScale` presence markers of proto3 optional fields.
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const packageDefinition = protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS);
export const diffusionService = packageDefinition[SERVICE_NAME] as grpc.ServiceDefinition;

// Message types are generated from the .proto by `npm run proto:types` (test/proto-types.test.ts keeps them current).
// `*Msg` names the shape as decoded (every field present, 64-bit integers as strings), as handlers receive requests
// and clients receive events; `*Init` the looser shape a sender may write.
export type GenerateRequestMsg = GenerateRequest__Output;
export type CompareRequestMsg = CompareRequest__Output;
export type GenerateRequestInit = GenerateRequest;
export type CompareRequestInit = CompareRequest;
export type ImageMsg = Image__Output;
export type GenerateEventMsg = GenerateEvent__Output;
export type CompareEventMsg = CompareEvent__Output;
export type CompareResultMsg = CompareResult__Output;
export type ListModelsResponseMsg = ListModelsResponse__Output;
export type { DiffusionClient, DiffusionHandlers };

const DiffusionClientCtor = grpc.makeGenericClientConstructor(diffusionService, 'Diffusion');

export function createDiffusionClient(
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
): DiffusionClient {
  return new DiffusionClientCtor(address, credentials, options) as unknown as DiffusionClient;
}
