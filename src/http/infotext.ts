/**
 * AUTOMATIC1111's "infotext": how an image was made, as A1111 writes it into the PNG's `parameters` chunk and into
 * its API's `info`, so its readers (PNG Info, prompt readers of image viewers) understand ours.
 */
import type { GeneratedImage } from '../pipeline/engine-api.js';
import { a1111SamplerName } from './samplers.js';

export interface InfotextSource {
  prompt: string;
  negativePrompt: string;
  clipSkip: number;
}

/** `key: value` values with a comma or a quote are quoted, as A1111 does. */
function quote(v: string): string {
  return /[,:"\n]/.test(v) ? JSON.stringify(v) : v;
}

export function infotext(req: InfotextSource, img: GeneratedImage): string {
  const { sampler, schedule } = a1111SamplerName(img.scheduler);
  const fields: Array<[string, string | number | undefined]> = [
    ['Steps', img.steps],
    ['Sampler', sampler],
    ['Schedule type', schedule],
    ['CFG scale', img.guidanceScale],
    ['Seed', img.seed.toString()],
    ['Size', `${img.width}x${img.height}`],
    ['Model', img.pipeline],
    ['Clip skip', req.clipSkip > 1 ? req.clipSkip : undefined],
    ['Text encoder', img.encoder],
    ['Safety', img.safety ? `${img.safety.flagged ? 'flagged' : 'passed'} by ${img.safety.classifier}` : undefined],
  ];
  const line = fields
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}: ${quote(String(v))}`)
    .join(', ');
  return [req.prompt, ...(req.negativePrompt ? [`Negative prompt: ${req.negativePrompt}`] : []), line].join('\n');
}
