/**
 * Request validation on the main thread. Workers may be blocked inside a denoising step for seconds, so the server
 * checks requests against the `ModelsInfo` the workers reported at start-up, with the same `resolveRequest` the
 * engine uses; each worker still passes every job through `engine.resolve` before running it.
 */
import {
  InvalidRequestError,
  type GenerationRequest,
  type ModelsInfo,
  type PartialRequest,
} from '../pipeline/engine-api.js';
import { LIMITS, resolveRequest } from '../pipeline/request.js';
import type { CompareRequestMsg, GenerateRequestMsg } from './proto.js';

type Common = Omit<GenerateRequestMsg, 'encoder'>;

/** uint64 arrives as a decimal string; another transport (JSON) may hand over anything, so refuse it readably. */
function seed(v: unknown): bigint {
  const digits = typeof v === 'string' && /^\d{1,20}$/.test(v);
  if (digits || (typeof v === 'number' && Number.isSafeInteger(v))) return BigInt(v);
  throw new InvalidRequestError(`seed ${JSON.stringify(String(v)).slice(0, 40)} is not an unsigned integer`);
}

/** proto3 optional fields arrive with a `_field` oneof marker; zero means "the pipeline's default". */
function partial(msg: Common, encoder: string): PartialRequest {
  return {
    pipeline: msg.pipeline,
    encoder,
    prompt: msg.prompt ?? '',
    negativePrompt: msg.negativePrompt ?? '',
    seed: msg._seed && msg.seed !== undefined ? seed(msg.seed) : undefined,
    steps: msg.steps,
    guidanceScale: msg._guidanceScale ? Number(msg.guidanceScale) : undefined,
    width: msg.width,
    height: msg.height,
    scheduler: msg.scheduler,
    numImages: msg.numImages,
    clipSkip: msg.clipSkip,
  };
}

/** Validate a Generate request and fill the pipeline's defaults; throws InvalidRequestError. */
export function resolveGenerate(models: ModelsInfo, msg: GenerateRequestMsg): GenerationRequest {
  return resolveRequest(models, partial(msg, msg.encoder));
}

/** One request per encoder, in the request's order, all with the same seed (so the same initial noise). */
export function resolveCompare(models: ModelsInfo, msg: CompareRequestMsg): GenerationRequest[] {
  const encoders = msg.encoders ?? [];
  if (encoders.length < 2) throw new InvalidRequestError(`compare needs at least 2 encoders, got ${encoders.length}`);
  if (encoders.length > LIMITS.maxCompareEncoders) {
    throw new InvalidRequestError(
      `compare takes at most ${LIMITS.maxCompareEncoders} encoders, got ${encoders.length}`,
    );
  }
  if (encoders.some((e) => !e))
    throw new InvalidRequestError('compare encoders must be named (empty name in the list)');
  const first = resolveRequest(models, partial(msg, encoders[0]));
  return encoders.map((e) => resolveRequest(models, { ...first, encoder: e }));
}
