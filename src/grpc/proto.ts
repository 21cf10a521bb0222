/**
 * The gRPC interface of safesd.v1, loaded at runtime from proto/safesd/v1/diffusion.proto, with the message shapes
 * proto-loader produces for the options below (camelCase fields, 64-bit integers as decimal strings).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import type { ModelsInfo } from '../pipeline/engine-api.js';

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

/** Fields shared by GenerateRequest and CompareRequest, as decoded. */
interface RequestCommon {
  pipeline: string;
  prompt: string;
  negativePrompt: string;
  /** Present (with `_seed === 'seed'`) only when the client set it. */
  seed?: string;
  _seed?: 'seed';
  steps: number;
  guidanceScale?: number;
  _guidanceScale?: 'guidanceScale';
  width: number;
  height: number;
  scheduler: string;
  numImages: number;
  clipSkip: number;
}

export interface GenerateRequestMsg extends RequestCommon {
  encoder: string;
}

export interface CompareRequestMsg extends RequestCommon {
  encoders: string[];
}

export interface ImageMsg {
  png: Uint8Array;
  seed: string;
  width: number;
  height: number;
  encoder: string;
  scheduler: string;
  steps: number;
  guidanceScale: number;
  pipeline: string;
}

export interface QueuedMsg {
  position: number;
}
export interface ProgressMsg {
  step: number;
  total: number;
}

export type GenerateEventMsg =
  | { queued: QueuedMsg; event?: 'queued' }
  | { progress: ProgressMsg; event?: 'progress' }
  | { result: { images: ImageMsg[] }; event?: 'result' };

export interface CompareResultMsg {
  columns: Array<{ encoder: string; images: ImageMsg[] }>;
  seed: string;
}

export type CompareEventMsg =
  | { queued: QueuedMsg; event?: 'queued' }
  | { progress: ProgressMsg; event?: 'progress' }
  | { result: CompareResultMsg; event?: 'result' };

/** Field for field the engine's ModelsInfo, less the default pipeline (the proto has no field for it). */
export type ListModelsResponseMsg = Pick<ModelsInfo, 'pipelines' | 'encoders'>;

/** A typed client for the Diffusion service (used by `safe-sd client` and the tests). */
export interface DiffusionClient extends grpc.Client {
  generate(request: Partial<GenerateRequestMsg>, metadata?: grpc.Metadata, options?: grpc.CallOptions):
    grpc.ClientReadableStream<GenerateEventMsg>;
  compare(request: Partial<CompareRequestMsg>, metadata?: grpc.Metadata, options?: grpc.CallOptions):
    grpc.ClientReadableStream<CompareEventMsg>;
  listModels(
    request: object,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, res?: ListModelsResponseMsg) => void,
  ): grpc.ClientUnaryCall;
}

const DiffusionClientCtor = grpc.makeGenericClientConstructor(diffusionService, 'Diffusion');

export function createDiffusionClient(
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
): DiffusionClient {
  return new DiffusionClientCtor(address, credentials, options) as unknown as DiffusionClient;
}
