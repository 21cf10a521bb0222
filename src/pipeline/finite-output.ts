import type { F32Tensor } from '../core/tensor.js';
import type { GenerationRequest } from './engine-api.js';

/** The model or the scheduler produced NaN or infinity: the request gets this error, never a blank picture. */
export class NonFiniteOutputError extends Error {
  override name = 'NonFiniteOutputError';
}

/** Throws unless every value of the decoded images is finite (a NaN would otherwise clamp to a black PNG). */
export function requireFiniteImages(images: F32Tensor, r: GenerationRequest): void {
  const bad = images.data.findIndex((x) => !Number.isFinite(x));
  if (bad < 0) return;
  const perImage = images.data.length / images.shape[0];
  throw new NonFiniteOutputError(
    `image ${Math.floor(bad / perImage)} came out with non-finite values (${images.data[bad]}) ` +
      `from scheduler '${r.scheduler}' with ${r.steps} steps, guidance ${r.guidanceScale}, ` +
      `pipeline '${r.pipeline}', encoder '${r.encoder}': no image was written`,
  );
}
