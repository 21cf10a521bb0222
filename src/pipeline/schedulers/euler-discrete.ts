import type { Config } from '../../core/config.js';
import { checkLengths, PREDICTION_TYPES, type PredictionType } from './scheduler.js';
import { oneOf } from './schedule.js';
import { denoised, SigmaScheduler } from './sigma-scheduler.js';

/**
 * Euler's method on the probability-flow ODE dx/dσ = (x − x₀)/σ (Karras et al. 2022, Algorithm 2 without churn).
 */
export class EulerDiscreteScheduler extends SigmaScheduler {
  readonly order = 1;
  private readonly prediction: PredictionType;

  constructor(cfg: Config) {
    super('EulerDiscreteScheduler', cfg, { karras: true, finalSigmasType: true });
    this.prediction = oneOf(cfg, 'prediction_type', PREDICTION_TYPES, 'epsilon');
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    const i = this.indexAt(t);
    const sigma = this.sigmas[i];
    const dt = this.sigmas[i + 1] - sigma;
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const x = sample[k];
      const derivative = (x - denoised(this.prediction, modelOutput[k], x, sigma)) / sigma;
      out[k] = x + derivative * dt;
    }
    this.stepIndex = i + 1;
    return out;
  }
}
