import type { Config } from '../../core/config.js';
import { checkLengths, PREDICTION_TYPES, type PredictionType } from './scheduler.js';
import { oneOf } from './schedule.js';
import { denoised, SigmaScheduler } from './sigma-scheduler.js';

/**
 * Heun's method (Karras et al. 2022, Algorithm 1): an Euler step to the next sigma, then a second model call there
 * and the average of both slopes. The schedule lists every inner timestep twice, one model call each.
 */
export class HeunDiscreteScheduler extends SigmaScheduler {
  readonly order = 2;
  private readonly prediction: PredictionType;
  private readonly clipRange: number | undefined;
  /** Set between the two calls of a step. */
  private first: { derivative: Float32Array; dt: number; sample: Float32Array } | undefined;

  constructor(cfg: Config) {
    super('HeunDiscreteScheduler', cfg, {
      karras: true,
      betaDefaults: { beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'linear' },
    });
    this.prediction = oneOf(cfg, 'prediction_type', PREDICTION_TYPES, 'epsilon');
    this.clipRange = cfg.bool('clip_sample', false) ? cfg.num('clip_sample_range', 1) : undefined;
  }

  protected override setSchedule(timesteps: number[], sigmas: number[]): void {
    this.timesteps = [timesteps[0], ...timesteps.slice(1).flatMap((t) => [t, t])];
    this.sigmas = [sigmas[0], ...sigmas.slice(1, -1).flatMap((s) => [s, s]), sigmas[sigmas.length - 1]];
    this.first = undefined;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    const i = this.indexAt(t);
    const first = this.first;
    // Both calls read sigmas[i]: the second is made at the next sigma, which the schedule repeats.
    const sigma = this.sigmas[i];
    const n = sample.length;
    const derivative = new Float32Array(n);
    for (let k = 0; k < n; k++) {
      let x0 = denoised(this.prediction, modelOutput[k], sample[k], sigma);
      if (this.clipRange !== undefined) x0 = Math.min(Math.max(x0, -this.clipRange), this.clipRange);
      derivative[k] = (sample[k] - x0) / sigma;
    }
    const out = new Float32Array(n);
    if (!first) {
      const dt = this.sigmas[i + 1] - sigma;
      for (let k = 0; k < n; k++) out[k] = sample[k] + derivative[k] * dt;
      this.first = { derivative, dt, sample };
    } else {
      for (let k = 0; k < n; k++) out[k] = first.sample[k] + ((first.derivative[k] + derivative[k]) / 2) * first.dt;
      this.first = undefined;
    }
    this.stepIndex = i + 1;
    return out;
  }
}
