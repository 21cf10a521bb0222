import type { Config } from '../../core/config.js';
import { checkStepCount, indexForTimestep, requireTimesteps, type Scheduler } from './scheduler.js';
import {
  oneOf,
  refuseUnsupported,
  spacedTimesteps,
  TIMESTEP_SPACINGS,
  trainAlphasCumprod,
  trainSigmas,
  type BetaDefaults,
  type TimestepSpacing,
} from './schedule.js';
import { interpTable, karrasSigmas, logTable, sigmaToT } from './sigmas.js';

const f32 = Math.fround;

/**
 * What Euler, Euler ancestral, LMS and Heun share (k-diffusion's samplers in diffusers' clothes): the samples live
 * at noise level sigma, x = x₀ + σε, the model sees x / sqrt(σ² + 1), and timesteps are fractional training
 * steps.
 */
export abstract class SigmaScheduler implements Scheduler {
  abstract readonly order: number;
  timesteps: number[] = [];
  sigmas: number[] = [];
  initNoiseSigma = 1;
  protected stepIndex: number | undefined;
  protected readonly trainSigmas: Float32Array;
  private readonly logSigmas: Float32Array;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  private readonly useKarras: boolean;
  private readonly karrasRange: { min: number | undefined; max: number | undefined };
  private readonly finalSigmaMin: boolean;

  /**
   * `features`: the config options this class reads (diffusers ignores the others, e.g. karras for Euler ancestral).
   */
  constructor(
    protected readonly name: string,
    cfg: Config,
    features: { karras?: boolean; finalSigmasType?: boolean; betaDefaults?: BetaDefaults },
  ) {
    refuseUnsupported(cfg, {
      use_exponential_sigmas: false,
      use_beta_sigmas: false,
      interpolation_type: 'linear',
      timestep_type: 'discrete',
    });
    this.trainSigmas = trainSigmas(trainAlphasCumprod(cfg, features.betaDefaults));
    this.logSigmas = logTable(this.trainSigmas);
    this.spacing = oneOf(cfg, 'timestep_spacing', TIMESTEP_SPACINGS, 'linspace');
    this.stepsOffset = cfg.int('steps_offset', 0);
    this.useKarras = features.karras === true && cfg.bool('use_karras_sigmas', false);
    this.karrasRange = {
      min: cfg.has('sigma_min') ? cfg.num('sigma_min') : undefined,
      max: cfg.has('sigma_max') ? cfg.num('sigma_max') : undefined,
    };
    this.finalSigmaMin =
      features.finalSigmasType === true &&
      oneOf(cfg, 'final_sigmas_type', ['zero', 'sigma_min'], 'zero') === 'sigma_min';
  }

  setTimesteps(n: number): void {
    checkStepCount(n, this.trainSigmas.length, this.name);
    let timesteps = spacedTimesteps(this.spacing, this.trainSigmas.length, n, this.stepsOffset, false);
    let sigmas = timesteps.map((t) => interpTable(t, this.trainSigmas));
    if (this.useKarras) {
      sigmas = karrasSigmas(this.karrasRange.min ?? sigmas[sigmas.length - 1], this.karrasRange.max ?? sigmas[0], n);
      timesteps = sigmas.map((s) => f32(sigmaToT(s, this.logSigmas)));
    }
    const final = this.finalSigmaMin ? this.trainSigmas[0] : 0;
    this.setSchedule(timesteps, [...sigmas, final].map(f32));
    const maxSigma = Math.max(...this.sigmas);
    this.initNoiseSigma = this.spacing === 'leading' ? f32(Math.sqrt(f32(maxSigma * maxSigma + 1))) : maxSigma;
    this.stepIndex = undefined;
  }

  /** Heun repeats the inner timesteps; the others take the schedule as it is. */
  protected setSchedule(timesteps: number[], sigmas: number[]): void {
    this.timesteps = timesteps;
    this.sigmas = sigmas;
  }

  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const sigma = this.sigmas[this.indexAt(t)];
    const scale = f32(Math.sqrt(f32(sigma * sigma + 1)));
    return sample.map((x) => x / scale);
  }

  /** The step index, found from t on the first call and counted from there (as diffusers does). */
  protected indexAt(t: number): number {
    requireTimesteps(this.timesteps, this.name);
    this.stepIndex ??= indexForTimestep(this.timesteps, t, this.name);
    return this.stepIndex;
  }

  abstract step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array;
}

/** x₀ as the model predicts it at noise level sigma. */
export function denoised(prediction: string, m: number, x: number, sigma: number): number {
  if (prediction === 'epsilon') return x - sigma * m;
  if (prediction === 'v_prediction') return m * (-sigma / Math.sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1);
  return m;
}
