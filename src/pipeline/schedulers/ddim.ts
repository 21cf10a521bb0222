import type { Config } from '../../core/config.js';
import {
  checkLengths,
  checkStepCount,
  requireTrainTimesteps,
  drawNoise,
  PREDICTION_TYPES,
  requireTimesteps,
  type NoiseSource,
  type PredictionType,
  type Scheduler,
  type SchedulerOptions,
} from './scheduler.js';
import {
  alphaCumprodAt,
  oneOf,
  spacedTimesteps,
  TIMESTEP_SPACINGS,
  trainAlphasCumprod,
  type TimestepSpacing,
} from './schedule.js';

/** DDIM (Song et al. 2020), diffusers' DDIMScheduler; eta > 0 adds fresh noise at every step. */
export class DDIMScheduler implements Scheduler {
  readonly order = 1;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  private readonly alphasCumprod: Float32Array;
  private readonly finalAlphaCumprod: number;
  private readonly trainSteps: number;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  private readonly prediction: PredictionType;
  private readonly clipRange: number | undefined;
  private readonly eta: number;
  private readonly noise: NoiseSource | undefined;
  private numInferenceSteps = 0;

  constructor(cfg: Config, options: SchedulerOptions = {}) {
    this.alphasCumprod = trainAlphasCumprod(cfg);
    this.trainSteps = this.alphasCumprod.length;
    this.finalAlphaCumprod = cfg.bool('set_alpha_to_one', true) ? 1 : this.alphasCumprod[0];
    this.spacing = oneOf(cfg, 'timestep_spacing', TIMESTEP_SPACINGS, 'leading');
    this.stepsOffset = cfg.int('steps_offset', 0);
    this.prediction = oneOf(cfg, 'prediction_type', PREDICTION_TYPES, 'epsilon');
    this.clipRange = cfg.bool('clip_sample', true) ? cfg.num('clip_sample_range', 1) : undefined;
    this.eta = options.eta ?? 0;
    this.noise = options.noise;
  }

  setTimesteps(n: number): void {
    checkStepCount(n, this.trainSteps, 'DDIMScheduler');
    this.numInferenceSteps = n;
    this.timesteps = spacedTimesteps(this.spacing, this.trainSteps, n, this.stepsOffset, true);
    requireTrainTimesteps('DDIMScheduler', n, this.timesteps, this.trainSteps);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    requireTimesteps(this.timesteps, 'DDIMScheduler');
    checkLengths('DDIMScheduler', modelOutput, sample);
    const prevT = t - Math.floor(this.trainSteps / this.numInferenceSteps);
    const aT = alphaCumprodAt(this.alphasCumprod, t, this.finalAlphaCumprod, 'DDIMScheduler');
    const aPrev = alphaCumprodAt(this.alphasCumprod, prevT, this.finalAlphaCumprod, 'DDIMScheduler');
    const bT = Math.fround(1 - aT);
    const sqrtA = Math.sqrt(aT);
    const sqrtB = Math.sqrt(bT);
    const variance = ((1 - aPrev) / bT) * (1 - aT / aPrev);
    const std = this.eta * Math.sqrt(variance);
    const dirCoeff = Math.sqrt(1 - aPrev - std * std);
    const sqrtAPrev = Math.sqrt(aPrev);
    const noise = this.eta > 0 ? drawNoise(this.noise, sample.length, 'DDIMScheduler with eta > 0') : undefined;
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const x = sample[i];
      const m = modelOutput[i];
      let x0: number;
      let eps: number;
      if (this.prediction === 'epsilon') {
        x0 = (x - sqrtB * m) / sqrtA;
        eps = m;
      } else if (this.prediction === 'sample') {
        x0 = m;
        eps = (x - sqrtA * x0) / sqrtB;
      } else {
        x0 = sqrtA * x - sqrtB * m;
        eps = sqrtA * m + sqrtB * x;
      }
      if (this.clipRange !== undefined) x0 = Math.min(Math.max(x0, -this.clipRange), this.clipRange);
      out[i] = sqrtAPrev * x0 + dirCoeff * eps + (noise ? std * noise[i] : 0);
    }
    return out;
  }
}
