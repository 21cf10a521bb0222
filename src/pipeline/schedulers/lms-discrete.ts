import type { Config } from '../../core/config.js';
import { checkLengths, PREDICTION_TYPES, requireDistinctSigmas, type PredictionType } from './scheduler.js';
import { oneOf } from './schedule.js';
import { denoised, SigmaScheduler } from './sigma-scheduler.js';

/** Past derivatives the linear multistep method combines. */
const LMS_ORDER = 4;

/**
 * Gauss–Legendre nodes and weights on [−1, 1]: exact for polynomials up to degree 7, and the LMS basis has ≤ 3.
 */
const GL_NODES = [-0.8611363115940526, -0.33998104358485626, 0.33998104358485626, 0.8611363115940526];
const GL_WEIGHTS = [0.34785484513745385, 0.6521451548625461, 0.6521451548625461, 0.34785484513745385];

/**
 * Linear multistep (k-diffusion's sample_lms): the ODE's slope is extrapolated by the Lagrange polynomial through
 * the last four derivatives, integrated over [σ_i, σ_{i+1}].
 */
export class LMSDiscreteScheduler extends SigmaScheduler {
  readonly order = 1;
  private readonly prediction: PredictionType;
  private derivatives: Float32Array[] = [];

  constructor(cfg: Config) {
    super('LMSDiscreteScheduler', cfg, { karras: true });
    this.prediction = oneOf(cfg, 'prediction_type', PREDICTION_TYPES, 'epsilon');
  }

  override setTimesteps(n: number): void {
    super.setTimesteps(n);
    requireDistinctSigmas(this.name, n, this.sigmas);
    this.derivatives = [];
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    const i = this.indexAt(t);
    const sigma = this.sigmas[i];
    const derivative = new Float32Array(sample.length);
    for (let k = 0; k < sample.length; k++) {
      derivative[k] = (sample[k] - denoised(this.prediction, modelOutput[k], sample[k], sigma)) / sigma;
    }
    this.derivatives = [...this.derivatives, derivative].slice(-LMS_ORDER);
    const order = Math.min(i + 1, LMS_ORDER);
    const coeffs = Array.from({ length: order }, (_, j) => this.lmsCoefficient(order, i, j));
    const out = Float32Array.from(sample);
    for (let j = 0; j < order; j++) {
      const d = this.derivatives[this.derivatives.length - 1 - j];
      for (let k = 0; k < out.length; k++) out[k] += coeffs[j] * d[k];
    }
    this.stepIndex = i + 1;
    return out;
  }

  /**
   * ∫ from σ_i to σ_{i+1} of the Lagrange basis polynomial of σ_{i−j} over the nodes σ_i … σ_{i−order+1}.
   */
  private lmsCoefficient(order: number, i: number, j: number): number {
    const s = this.sigmas;
    const basis = (tau: number) => {
      let prod = 1;
      for (let k = 0; k < order; k++) if (k !== j) prod *= (tau - s[i - k]) / (s[i - j] - s[i - k]);
      return prod;
    };
    const a = s[i];
    const b = s[i + 1];
    const half = (b - a) / 2;
    const mid = (a + b) / 2;
    let sum = 0;
    for (let q = 0; q < GL_NODES.length; q++) sum += GL_WEIGHTS[q] * basis(mid + half * GL_NODES[q]);
    return sum * half;
  }
}
