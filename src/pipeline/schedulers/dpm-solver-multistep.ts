import type { Config } from '../../core/config.js';
import {
  checkLengths,
  drawNoise,
  indexForTimestep,
  requireTimesteps,
  type NoiseSource,
  type Scheduler,
  type SchedulerOptions,
} from './scheduler.js';
import { oneOf, refuseUnsupported } from './schedule.js';
import { alphaSigma, dataPrediction, MultistepSchedule } from './multistep.js';

const ALGORITHMS = ['dpmsolver++', 'sde-dpmsolver++'] as const;

/**
 * DPM-Solver++ (Lu et al. 2022), diffusers' DPMSolverMultistepScheduler for the data-prediction algorithms: the
 * multistep solver in λ = log(α/σ) reusing past x₀ predictions, and its SDE variant that injects noise each step.
 */
export class DPMSolverMultistepScheduler implements Scheduler {
  readonly order = 1;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  sigmas: number[] = [];
  private readonly ms: MultistepSchedule;
  private readonly sde: boolean;
  private readonly solverOrder: number;
  private readonly heun: boolean;
  private readonly lowerOrderFinal: boolean;
  private readonly eulerAtFinal: boolean;
  private readonly noise: NoiseSource | undefined;
  private stepIndex: number | undefined;
  private modelOutputs: Float32Array[] = [];
  private lowerOrderNums = 0;

  constructor(cfg: Config, options: SchedulerOptions = {}) {
    refuseUnsupported(cfg, { lambda_min_clipped: null });
    this.ms = new MultistepSchedule('DPMSolverMultistepScheduler', cfg);
    this.sde = oneOf(cfg, 'algorithm_type', ALGORITHMS, 'dpmsolver++') === 'sde-dpmsolver++';
    this.solverOrder = cfg.int('solver_order', 2);
    if (this.solverOrder < 1 || this.solverOrder > 3)
      throw new Error(`${cfg.file}: config key 'solver_order' is ${this.solverOrder}, expected 1, 2 or 3`);
    // diffusers maps the other solvers' names onto midpoint.
    this.heun = cfg.str('solver_type', 'midpoint') === 'heun';
    this.lowerOrderFinal = cfg.bool('lower_order_final', true);
    this.eulerAtFinal = cfg.bool('euler_at_final', false);
    this.noise = options.noise;
  }

  setTimesteps(n: number): void {
    const { timesteps, sigmas } = this.ms.schedule(n, { roundKarras: !this.ms.cosineBetas, karrasFinalOwnMin: false });
    this.timesteps = timesteps;
    this.sigmas = sigmas;
    this.modelOutputs = [];
    this.lowerOrderNums = 0;
    this.stepIndex = undefined;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    const who = this.ms.name;
    requireTimesteps(this.timesteps, who);
    checkLengths(who, modelOutput, sample);
    this.stepIndex ??= indexForTimestep(this.timesteps, t, who, true);
    const i = this.stepIndex;
    const steps = this.timesteps.length;
    // Few steps make the last ones long: fall back to lower orders there for stability.
    const lowerOrderFinal =
      i === steps - 1 && (this.eulerAtFinal || (this.lowerOrderFinal && steps < 15) || !this.ms.finalSigmaMin);
    const lowerOrderSecond = i === steps - 2 && this.lowerOrderFinal && steps < 15;
    const x0 = dataPrediction(this.ms.prediction, modelOutput, sample, this.sigmas[i]);
    this.modelOutputs = [...this.modelOutputs, x0].slice(-this.solverOrder);
    const noise = this.sde ? drawNoise(this.noise, sample.length, `${who} (sde-dpmsolver++)`) : undefined;
    let prev: Float32Array;
    if (this.solverOrder === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) prev = this.firstOrder(i, sample, noise);
    else if (this.solverOrder === 2 || this.lowerOrderNums < 2 || lowerOrderSecond)
      prev = this.secondOrder(i, sample, noise);
    else prev = this.thirdOrder(i, sample, noise);
    this.lowerOrderNums = Math.min(this.lowerOrderNums + 1, this.solverOrder);
    this.stepIndex = i + 1;
    return prev;
  }

  /**
   * x_t = (σ_t/σ_s) e^{−h·sde} x + Σ c_k D_k (+ σ_t sqrt(1 − e^{−2h}) z for the SDE): the shared shape of
   * every update, given the weights of the divided differences D_k of the x₀ predictions.
   */
  private update(
    i: number,
    sample: Float32Array,
    D: Float32Array[],
    weights: number[],
    noise: Float32Array | undefined,
  ): Float32Array {
    const t = alphaSigma(this.sigmas[i + 1]);
    const s0 = alphaSigma(this.sigmas[i]);
    const h = t.lambda - s0.lambda;
    const sampleCoeff = this.sde ? (t.sigmaT / s0.sigmaT) * Math.exp(-h) : t.sigmaT / s0.sigmaT;
    const noiseCoeff = this.sde ? t.sigmaT * Math.sqrt(1 - Math.exp(-2 * h)) : 0;
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      let v = sampleCoeff * sample[k];
      for (let j = 0; j < D.length; j++) v += weights[j] * D[j][k];
      out[k] = noise ? v + noiseCoeff * noise[k] : v;
    }
    return out;
  }

  private lambdas(i: number, count: number): { h: number; hs: number[]; alphaT: number } {
    const lam = (j: number) => alphaSigma(this.sigmas[j]).lambda;
    const lt = lam(i + 1);
    const hs = Array.from({ length: count }, (_, j) => lam(i - j) - lam(i - j - 1));
    return { h: lt - lam(i), hs, alphaT: alphaSigma(this.sigmas[i + 1]).alpha };
  }

  /** Weight of D0: α_t (1 − e^{−h}) for the ODE, α_t (1 − e^{−2h}) for the SDE. */
  private phi1(alphaT: number, h: number): number {
    return this.sde ? alphaT * (1 - Math.exp(-2 * h)) : -(alphaT * (Math.exp(-h) - 1));
  }

  private firstOrder(i: number, sample: Float32Array, noise: Float32Array | undefined): Float32Array {
    const { h, alphaT } = this.lambdas(i, 0);
    return this.update(i, sample, [this.modelOutputs[this.modelOutputs.length - 1]], [this.phi1(alphaT, h)], noise);
  }

  private secondOrder(i: number, sample: Float32Array, noise: Float32Array | undefined): Float32Array {
    const { h, hs, alphaT } = this.lambdas(i, 1);
    const r0 = hs[0] / h;
    const [m1, m0] = this.modelOutputs.slice(-2);
    const D1 = m0.map((v, k) => (1 / r0) * (v - m1[k]));
    const w0 = this.phi1(alphaT, h);
    let w1: number;
    if (!this.heun) w1 = 0.5 * w0;
    else if (this.sde) w1 = alphaT * ((1 - Math.exp(-2 * h)) / (-2 * h) + 1);
    else w1 = alphaT * ((Math.exp(-h) - 1) / h + 1);
    return this.update(i, sample, [m0, D1], [w0, w1], noise);
  }

  private thirdOrder(i: number, sample: Float32Array, noise: Float32Array | undefined): Float32Array {
    const { h, hs, alphaT } = this.lambdas(i, 2);
    const [r0, r1] = [hs[0] / h, hs[1] / h];
    const [m2, m1, m0] = this.modelOutputs.slice(-3);
    const D1_0 = m0.map((v, k) => (1 / r0) * (v - m1[k]));
    const D1_1 = m1.map((v, k) => (1 / r1) * (v - m2[k]));
    const D1 = D1_0.map((v, k) => v + (r0 / (r0 + r1)) * (v - D1_1[k]));
    const D2 = D1_0.map((v, k) => (1 / (r0 + r1)) * (v - D1_1[k]));
    const w0 = this.phi1(alphaT, h);
    const weights = this.sde
      ? [
          w0,
          alphaT * ((1 - Math.exp(-2 * h)) / (-2 * h) + 1),
          alphaT * ((1 - Math.exp(-2 * h) - 2 * h) / (2 * h) ** 2 - 0.5),
        ]
      : [w0, alphaT * ((Math.exp(-h) - 1) / h + 1), -(alphaT * ((Math.exp(-h) - 1 + h) / h ** 2 - 0.5))];
    return this.update(i, sample, [m0, D1, D2], weights, noise);
  }
}
