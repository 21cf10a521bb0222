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

const VARIANCE_TYPES = ['fixed_small', 'fixed_small_log', 'fixed_large'] as const;

/** DDPM ancestral sampling (Ho et al. 2020), diffusers' DDPMScheduler: posterior mean plus fresh noise each step. */
export class DDPMScheduler implements Scheduler {
  readonly order = 1;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  private readonly alphasCumprod: Float32Array;
  private readonly trainSteps: number;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  private readonly prediction: PredictionType;
  private readonly clipRange: number | undefined;
  private readonly varianceType: (typeof VARIANCE_TYPES)[number];
  private readonly noise: NoiseSource | undefined;

  constructor(cfg: Config, options: SchedulerOptions = {}) {
    this.alphasCumprod = trainAlphasCumprod(cfg);
    this.trainSteps = this.alphasCumprod.length;
    this.spacing = oneOf(cfg, 'timestep_spacing', TIMESTEP_SPACINGS, 'leading');
    this.stepsOffset = cfg.int('steps_offset', 0);
    this.prediction = oneOf(cfg, 'prediction_type', PREDICTION_TYPES, 'epsilon');
    this.clipRange = cfg.bool('clip_sample', true) ? cfg.num('clip_sample_range', 1) : undefined;
    this.varianceType = oneOf(cfg, 'variance_type', VARIANCE_TYPES, 'fixed_small');
    this.noise = options.noise;
  }

  setTimesteps(n: number): void {
    checkStepCount(n, this.trainSteps, 'DDPMScheduler');
    this.timesteps = spacedTimesteps(this.spacing, this.trainSteps, n, this.stepsOffset, true);
    requireTrainTimesteps('DDPMScheduler', n, this.timesteps, this.trainSteps);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    requireTimesteps(this.timesteps, 'DDPMScheduler');
    checkLengths('DDPMScheduler', modelOutput, sample);
    const index = this.timesteps.indexOf(t);
    if (index < 0) throw new Error(`DDPMScheduler: timestep ${t} is not one of the scheduler's timesteps`);
    const prevT = index === this.timesteps.length - 1 ? -1 : this.timesteps[index + 1];
    const aT = alphaCumprodAt(this.alphasCumprod, t, 1, 'DDPMScheduler');
    const aPrev = alphaCumprodAt(this.alphasCumprod, prevT, 1, 'DDPMScheduler');
    const bT = Math.fround(1 - aT);
    const bPrev = Math.fround(1 - aPrev);
    const alphaT = aT / aPrev;
    const betaT = 1 - alphaT;
    // Eq. (7) of the DDPM paper: the posterior mean's weights on x₀ and x_t.
    const x0Coeff = (Math.sqrt(aPrev) * betaT) / bT;
    const xCoeff = (Math.sqrt(alphaT) * bPrev) / bT;
    let std = 0;
    if (t > 0) {
      const posteriorVariance = Math.max((bPrev / bT) * betaT, 1e-20);
      std = Math.sqrt(this.varianceType === 'fixed_large' ? betaT : posteriorVariance);
    }
    const noise = t > 0 ? drawNoise(this.noise, sample.length, 'DDPMScheduler') : undefined;
    const sqrtA = Math.sqrt(aT);
    const sqrtB = Math.sqrt(bT);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const x = sample[i];
      const m = modelOutput[i];
      let x0 =
        this.prediction === 'epsilon'
          ? (x - sqrtB * m) / sqrtA
          : this.prediction === 'sample'
            ? m
            : sqrtA * x - sqrtB * m;
      if (this.clipRange !== undefined) x0 = Math.min(Math.max(x0, -this.clipRange), this.clipRange);
      out[i] = x0Coeff * x0 + xCoeff * x + (noise ? std * noise[i] : 0);
    }
    return out;
  }
}
