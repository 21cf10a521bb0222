/** Generated images as the HTTP APIs return them: base64 PNGs whose `parameters` chunk holds A1111's infotext. */
import type { GeneratedImage, GenerationRequest } from '../pipeline/engine-api.js';
import { withPngText } from '../core/png.js';
import type { ImageJson } from './compare-events.js';
import { infotext } from './infotext.js';

/** Base64 of the PNG with the infotext as its `parameters`; empty for an image the safety check refused. */
export function pngBase64(img: GeneratedImage, parameters: string): string {
  return img.png.length ? Buffer.from(withPngText(img.png, { parameters })).toString('base64') : '';
}

export function imageJson(req: GenerationRequest, img: GeneratedImage): ImageJson {
  const parameters = infotext(req, img);
  return {
    png: pngBase64(img, parameters),
    seed: img.seed.toString(),
    width: img.width,
    height: img.height,
    pipeline: img.pipeline,
    encoder: img.encoder,
    scheduler: img.scheduler,
    steps: img.steps,
    guidance_scale: img.guidanceScale,
    parameters,
    safety: img.safety ?? null,
  };
}
