import type { Config } from '../../core/config.js';
import { checkLengths, drawNoise, type NoiseSource, type SchedulerOptions } from './scheduler.js';
import { oneOf } from './schedule.js';
import { denoised, SigmaScheduler } from './sigma-scheduler.js';

/**
 * Euler ancestral (k-diffusion's sample_euler_ancestral): an Euler step down to sigma_down, then fresh noise of
 * sigma_up, with sigma_down² + sigma_up² = sigma_next².
 */
export class EulerAncestralDiscreteScheduler extends SigmaScheduler {
  readonly order = 1;
  private readonly prediction: string;
  private readonly noise: NoiseSource | undefined;

  constructor(cfg: Config, options: SchedulerOptions = {}) {
    super('EulerAncestralDiscreteScheduler', cfg, {});
    this.prediction = oneOf(cfg, 'prediction_type', ['epsilon', 'v_prediction'], 'epsilon');
    this.noise = options.noise;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    const i = this.indexAt(t);
    const sigma = this.sigmas[i];
    const next = this.sigmas[i + 1];
    const sigmaUp = Math.sqrt((next * next * (sigma * sigma - next * next)) / (sigma * sigma));
    const sigmaDown = Math.sqrt(next * next - sigmaUp * sigmaUp);
    const dt = sigmaDown - sigma;
    const noise = drawNoise(this.noise, sample.length, this.name);
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const x = sample[k];
      const derivative = (x - denoised(this.prediction, modelOutput[k], x, sigma)) / sigma;
      out[k] = x + derivative * dt + noise[k] * sigmaUp;
    }
    this.stepIndex = i + 1;
    return out;
  }
}
