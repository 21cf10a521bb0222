/**
 * Previews while denoising: the UNet's current estimate of the clean latents, projected to RGB by a per-pipeline
 * linear map (latent channels → RGB), at latent resolution. A few multiply-adds per latent cell, where a VAE decode
 * would cost more than a denoising step.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../core/config.js';
import { trainAlphasCumprod } from './schedulers/schedule.js';

/** rgb = latent · factors + bias, in [-1, 1]; `factors` has one row of 3 per latent channel. */
export interface LatentRgb {
  factors: number[][];
  bias: [number, number, number];
}

/**
 * SD 1.x / 2.x (4-channel KL VAE): the factors the community's samplers use for their "cheap" previews
 * (AUTOMATIC1111's approximation, ComfyUI's latent format), applied to UNet-space latents.
 */
export const SD_LATENT_RGB: LatentRgb = {
  factors: [
    [0.3512, 0.2297, 0.3227],
    [0.325, 0.4974, 0.235],
    [-0.2829, 0.1762, 0.2721],
    [-0.212, -0.2616, -0.7177],
  ],
  bias: [0, 0, 0],
};

/** Beside a pipeline folder: factors fitted to its own VAE (see src/pipeline/fit-latent-rgb.ts). */
export const LATENT_RGB_FILE = 'latent_rgb.json';

export function parseLatentRgb(raw: unknown, where: string, channels: number): LatentRgb {
  const r = raw as Partial<LatentRgb> | null;
  const row3 = (v: unknown) =>
    Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
  if (!r || !Array.isArray(r.factors) || r.factors.length !== channels || !r.factors.every(row3) || !row3(r.bias)) {
    throw new Error(`${where}: expected { factors: ${channels} rows of 3 numbers, bias: 3 numbers }`);
  }
  return { factors: r.factors, bias: r.bias as [number, number, number] };
}

/** The pipeline's own fitted factors, else SD's for 4-channel latents, else none (no previews). */
export function latentRgbFor(pipelineDir: string, channels: number): LatentRgb | undefined {
  const file = join(pipelineDir, LATENT_RGB_FILE);
  if (existsSync(file)) return parseLatentRgb(JSON.parse(readFileSync(file, 'utf8')), file, channels);
  return channels === 4 ? SD_LATENT_RGB : undefined;
}

/**
 * x̂0 from one step's UNet input and output. `modelInput` is the scheduler-scaled sample, which is the
 * DDPM-form x_t for every scheduler (sigma-form schedulers divide by sqrt(σ² + 1) = 1 / sqrt(ᾱ)), so one formula
 * serves all of them; ᾱ at a fractional timestep (Karras sigmas) is interpolated.
 */
export class CleanEstimate {
  private readonly alphas: Float32Array;
  private readonly prediction: string;

  constructor(schedulerConfig: Config) {
    this.alphas = trainAlphasCumprod(schedulerConfig);
    this.prediction = schedulerConfig.str('prediction_type', 'epsilon');
  }

  alphaBar(t: number): number {
    const last = this.alphas.length - 1;
    const x = Math.min(Math.max(t, 0), last);
    const i = Math.floor(x);
    const f = x - i;
    return i >= last ? this.alphas[last] : this.alphas[i] * (1 - f) + this.alphas[i + 1] * f;
  }

  estimate(modelInput: Float32Array, modelOutput: Float32Array, t: number): Float32Array {
    const a = this.alphaBar(t);
    const sa = Math.sqrt(a);
    const sb = Math.sqrt(1 - a);
    const out = new Float32Array(modelInput.length);
    if (this.prediction === 'v_prediction') {
      for (let k = 0; k < out.length; k++) out[k] = sa * modelInput[k] - sb * modelOutput[k];
    } else if (this.prediction === 'sample') {
      out.set(modelOutput);
    } else {
      for (let k = 0; k < out.length; k++) out[k] = (modelInput[k] - sb * modelOutput[k]) / sa;
    }
    return out;
  }
}

/** Latents [n, C, h, w] → n RGB byte images of h × w. */
export function latentsToRgb(latents: Float32Array, n: number, h: number, w: number, map: LatentRgb): Uint8Array[] {
  const C = map.factors.length;
  const plane = h * w;
  if (latents.length !== n * C * plane)
    throw new Error(`latentsToRgb: ${latents.length} values are not ${n}x${C}x${h}x${w}`);
  const out: Uint8Array[] = [];
  for (let b = 0; b < n; b++) {
    const rgb = new Uint8Array(plane * 3);
    for (let p = 0; p < plane; p++) {
      for (let o = 0; o < 3; o++) {
        let v = map.bias[o];
        for (let c = 0; c < C; c++) v += latents[(b * C + c) * plane + p] * map.factors[c][o];
        rgb[p * 3 + o] = Math.min(255, Math.max(0, Math.round(((v + 1) / 2) * 255)));
      }
    }
    out.push(rgb);
  }
  return out;
}
