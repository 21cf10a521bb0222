import type { Config } from '../../core/config.js';
import { checkLengths, checkStepCount, requireTimesteps, requireTrainTimesteps, type Scheduler } from './scheduler.js';
import {
  alphaCumprodAt,
  oneOf,
  refuseUnsupported,
  spacedTimesteps,
  TIMESTEP_SPACINGS,
  trainAlphasCumprod,
} from './schedule.js';

/**
 * PNDM (Liu et al. 2022) in its pseudo linear multistep form (skip_prk_steps, as SD ships it), diffusers'
 * PNDMScheduler: an Adams–Bashforth combination of up to four past noise predictions. The second timestep is
 * evaluated twice: a first-order step to t₁, then a Heun-like redo from the start with the averaged noise.
 */
export class PNDMScheduler implements Scheduler {
  readonly order = 1;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  private readonly alphasCumprod: Float32Array;
  private readonly finalAlphaCumprod: number;
  private readonly trainSteps: number;
  private readonly spacing;
  private readonly stepsOffset: number;
  private readonly vPrediction: boolean;
  private stride = 0;
  private ets: Float32Array[] = [];
  private counter = 0;
  private curSample: Float32Array | undefined;

  constructor(cfg: Config) {
    refuseUnsupported(cfg, { skip_prk_steps: true });
    this.alphasCumprod = trainAlphasCumprod(cfg);
    this.trainSteps = this.alphasCumprod.length;
    this.finalAlphaCumprod = cfg.bool('set_alpha_to_one', false) ? 1 : this.alphasCumprod[0];
    this.spacing = oneOf(cfg, 'timestep_spacing', TIMESTEP_SPACINGS, 'leading');
    this.stepsOffset = cfg.int('steps_offset', 0);
    this.vPrediction = oneOf(cfg, 'prediction_type', ['epsilon', 'v_prediction'], 'epsilon') === 'v_prediction';
  }

  setTimesteps(n: number): void {
    checkStepCount(n, this.trainSteps, 'PNDMScheduler');
    this.stride = Math.floor(this.trainSteps / n);
    const asc = spacedTimesteps(this.spacing, this.trainSteps, n, this.stepsOffset, true).reverse();
    requireTrainTimesteps('PNDMScheduler', n, asc, this.trainSteps);
    // numpy's slices: with one step there is no second-to-last timestep to repeat.
    this.timesteps = [...asc.slice(0, -1), ...asc.slice(-2, -1), ...asc.slice(-1)].reverse();
    this.ets = [];
    this.counter = 0;
    this.curSample = undefined;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    requireTimesteps(this.timesteps, 'PNDMScheduler');
    checkLengths('PNDMScheduler', modelOutput, sample);
    let prevT = t - this.stride;
    let from = t;
    if (this.counter !== 1) {
      this.ets = [...this.ets.slice(-3), modelOutput];
    } else {
      prevT = t;
      from = t + this.stride;
    }
    const e = this.ets;
    let eps: Float32Array;
    let x = sample;
    if (e.length === 1 && this.counter === 0) {
      eps = modelOutput;
      this.curSample = sample;
    } else if (e.length === 1 && this.counter === 1) {
      eps = combine([modelOutput, e[0]], [0.5, 0.5]);
      x = this.curSample!;
      this.curSample = undefined;
    } else if (e.length === 2) {
      eps = combine([e[1], e[0]], [3 / 2, -1 / 2]);
    } else if (e.length === 3) {
      eps = combine([e[2], e[1], e[0]], [23 / 12, -16 / 12, 5 / 12]);
    } else {
      eps = combine([e[3], e[2], e[1], e[0]], [55 / 24, -59 / 24, 37 / 24, -9 / 24]);
    }
    this.counter++;
    return this.prevSample(x, from, prevT, eps);
  }

  /** Eq. (9) of the PNDM paper: x_{t−δ} from x_t and ε. */
  private prevSample(x: Float32Array, t: number, prevT: number, eps: Float32Array): Float32Array {
    const aT = alphaCumprodAt(this.alphasCumprod, t, this.finalAlphaCumprod, 'PNDMScheduler');
    const aPrev = alphaCumprodAt(this.alphasCumprod, prevT, this.finalAlphaCumprod, 'PNDMScheduler');
    const bT = Math.fround(1 - aT);
    const bPrev = Math.fround(1 - aPrev);
    const sampleCoeff = Math.sqrt(aPrev / aT);
    const epsCoeff = (aPrev - aT) / (aT * Math.sqrt(bPrev) + Math.sqrt(aT * bT * aPrev));
    const out = new Float32Array(x.length);
    for (let i = 0; i < out.length; i++) {
      const e = this.vPrediction ? Math.sqrt(aT) * eps[i] + Math.sqrt(bT) * x[i] : eps[i];
      out[i] = sampleCoeff * x[i] - epsCoeff * e;
    }
    return out;
  }
}

function combine(terms: Float32Array[], weights: number[]): Float32Array {
  const out = new Float32Array(terms[0].length);
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let k = 0; k < terms.length; k++) s += weights[k] * terms[k][i];
    out[i] = s;
  }
  return out;
}
