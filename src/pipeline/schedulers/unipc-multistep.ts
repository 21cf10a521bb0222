import type { Config } from '../../core/config.js';
import { checkLengths, indexForTimestep, requireTimesteps, type Scheduler } from './scheduler.js';
import { oneOf, refuseUnsupported } from './schedule.js';
import { alphaSigma, dataPrediction, MultistepSchedule } from './multistep.js';

/**
 * UniPC (Zhao et al. 2023), diffusers' UniPCMultistepScheduler: a multistep predictor (UniP), and before each new
 * step a corrector (UniC) that refines the previous step's result with the model output just computed there, at no
 * extra model call.
 */
export class UniPCMultistepScheduler implements Scheduler {
  readonly order = 1;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  sigmas: number[] = [];
  private readonly ms: MultistepSchedule;
  private readonly solverOrder: number;
  private readonly predictX0: boolean;
  private readonly bh2: boolean;
  private readonly lowerOrderFinal: boolean;
  private readonly disableCorrector: number[];
  private stepIndex: number | undefined;
  /** Converted model outputs of the last `solverOrder` steps, oldest first. */
  private modelOutputs: Float32Array[] = [];
  private lowerOrderNums = 0;
  private lastSample: Float32Array | undefined;
  private thisOrder = 1;

  constructor(cfg: Config) {
    refuseUnsupported(cfg, { solver_p: null, shift_terminal: null });
    this.ms = new MultistepSchedule('UniPCMultistepScheduler', cfg);
    this.solverOrder = cfg.int('solver_order', 2);
    if (this.solverOrder < 1)
      throw new Error(`${cfg.file}: config key 'solver_order' is ${this.solverOrder}, expected at least 1`);
    this.predictX0 = cfg.bool('predict_x0', true);
    // diffusers maps DPM-Solver's solver names onto bh2.
    this.bh2 = oneOf(cfg, 'solver_type', ['bh1', 'bh2', 'midpoint', 'heun', 'logrho'], 'bh2') !== 'bh1';
    this.lowerOrderFinal = cfg.bool('lower_order_final', true);
    this.disableCorrector = cfg.ints('disable_corrector', []);
  }

  setTimesteps(n: number): void {
    const { timesteps, sigmas } = this.ms.schedule(n, { roundKarras: true, karrasFinalOwnMin: true });
    this.timesteps = timesteps;
    this.sigmas = sigmas;
    this.modelOutputs = [];
    this.lowerOrderNums = 0;
    this.lastSample = undefined;
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
    const converted = this.convert(modelOutput, sample, i);
    let x = sample;
    if (i > 0 && !this.disableCorrector.includes(i - 1) && this.lastSample)
      x = this.correct(converted, this.lastSample, i);
    this.modelOutputs = [...this.modelOutputs, converted].slice(-this.solverOrder);
    const order = this.lowerOrderFinal ? Math.min(this.solverOrder, this.timesteps.length - i) : this.solverOrder;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1);
    this.lastSample = x;
    const prev = this.predict(x, i, this.thisOrder);
    this.lowerOrderNums = Math.min(this.lowerOrderNums + 1, this.solverOrder);
    this.stepIndex = i + 1;
    return prev;
  }

  /** x₀ for the data-prediction solver, ε for the noise-prediction one. */
  private convert(modelOutput: Float32Array, sample: Float32Array, i: number): Float32Array {
    if (this.predictX0) return dataPrediction(this.ms.prediction, modelOutput, sample, this.sigmas[i]);
    if (this.ms.prediction === 'epsilon') return modelOutput;
    const { alpha, sigmaT } = alphaSigma(this.sigmas[i]);
    return sample.map((x, k) =>
      this.ms.prediction === 'sample' ? (x - alpha * modelOutput[k]) / sigmaT : alpha * modelOutput[k] + sigmaT * x,
    );
  }

  /**
   * The B(h) update from σ_s0 = sigmas[s0] to σ_t = sigmas[s0 + 1]:
   * x_t = (σ_t/σ_s0) x − α_t h φ₁ m0 − α_t B(h) Σ ρ_k D_k (the noise-prediction form swaps α and σ).
   * `history` pairs the sigma index of each earlier output with it.
   */
  private coefficients(s0: number, history: number[]) {
    const t = alphaSigma(this.sigmas[s0 + 1]);
    const s = alphaSigma(this.sigmas[s0]);
    const h = t.lambda - s.lambda;
    const rks = [...history.map((si) => (alphaSigma(this.sigmas[si]).lambda - s.lambda) / h), 1];
    const hh = this.predictX0 ? -h : h;
    const hPhi1 = Math.expm1(hh);
    const Bh = this.bh2 ? Math.expm1(hh) : hh;
    let hPhiK = hPhi1 / hh - 1;
    let factorial = 1;
    const R: number[][] = [];
    const b: number[] = [];
    for (let k = 1; k <= rks.length; k++) {
      R.push(rks.map((r) => r ** (k - 1)));
      b.push((hPhiK * factorial) / Bh);
      factorial *= k + 1;
      hPhiK = hPhiK / hh - 1 / factorial;
    }
    const sampleCoeff = this.predictX0 ? t.sigmaT / s.sigmaT : t.alpha / s.alpha;
    const outCoeff = this.predictX0 ? t.alpha : t.sigmaT;
    return { rks, R, b, sampleCoeff, m0Coeff: outCoeff * hPhi1, resCoeff: outCoeff * Bh };
  }

  private predict(x: Float32Array, i: number, order: number): Float32Array {
    const history = Array.from({ length: order - 1 }, (_, k) => i - (k + 1));
    const { rks, R, b, sampleCoeff, m0Coeff, resCoeff } = this.coefficients(i, history);
    const m = this.modelOutputs;
    const m0 = m[m.length - 1];
    const D = history.map((_, k) => differences(m[m.length - 2 - k], m0, rks[k]));
    const rhos =
      D.length === 0
        ? []
        : order === 2
          ? [0.5]
          : solve(
              R.slice(0, -1).map((row) => row.slice(0, -1)),
              b.slice(0, -1),
            );
    const out = new Float32Array(x.length);
    for (let k = 0; k < out.length; k++) {
      let res = 0;
      for (let j = 0; j < D.length; j++) res += rhos[j] * D[j][k];
      out[k] = sampleCoeff * x[k] - m0Coeff * m0[k] - resCoeff * res;
    }
    return out;
  }

  /** UniC: redo the step from `last` (at sigmas[i − 1]) to sigmas[i] with `modelT`, the output at its result. */
  private correct(modelT: Float32Array, last: Float32Array, i: number): Float32Array {
    const order = this.thisOrder;
    const history = Array.from({ length: order - 1 }, (_, k) => i - (k + 2));
    const { rks, R, b, sampleCoeff, m0Coeff, resCoeff } = this.coefficients(i - 1, history);
    const m = this.modelOutputs;
    const m0 = m[m.length - 1];
    const D = history.map((_, k) => differences(m[m.length - 2 - k], m0, rks[k]));
    const rhos = order === 1 ? [0.5] : solve(R, b);
    const rhoT = rhos[rhos.length - 1];
    const out = new Float32Array(last.length);
    for (let k = 0; k < out.length; k++) {
      let res = 0;
      for (let j = 0; j < D.length; j++) res += rhos[j] * D[j][k];
      out[k] = sampleCoeff * last[k] - m0Coeff * m0[k] - resCoeff * (res + rhoT * (modelT[k] - m0[k]));
    }
    return out;
  }
}

function differences(mi: Float32Array, m0: Float32Array, rk: number): Float32Array {
  return mi.map((v, k) => (v - m0[k]) / rk);
}

/** Solves the small dense system A x = b by Gaussian elimination with partial pivoting. */
function solve(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, r) => [...row, b[r]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[p][c])) p = r;
    [M[c], M[p]] = [M[p], M[c]];
    for (let r = c + 1; r < n; r++) {
      const f = M[r][c] / M[c][c];
      for (let k = c; k <= n; k++) M[r][k] -= f * M[c][k];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = M[r][n];
    for (let k = r + 1; k < n; k++) s -= M[r][k] * x[k];
    x[r] = s / M[r][r];
  }
  return x;
}
