import type { Config } from '../../core/config.js';
import { checkStepCount, PREDICTION_TYPES, requireDistinctSigmas, type PredictionType } from './scheduler.js';
import {
  oneOf,
  refuseUnsupported,
  roundHalfEven,
  spacedTimesteps,
  TIMESTEP_SPACINGS,
  trainAlphasCumprod,
  trainSigmas,
  type TimestepSpacing,
} from './schedule.js';
import { interpTable, karrasSigmas, logTable, sigmaToT } from './sigmas.js';

/**
 * What DPM-Solver++ and UniPC share: integer timesteps spaced over n + 1 points with the last (t = 0) dropped, the
 * sigmas at them, and the data-prediction form x₀ = (x − σ_t ε) / α_t
 * with α_t = 1/sqrt(σ² + 1), σ_t = σ α_t.
 */
export class MultistepSchedule {
  readonly trainSigmas: Float32Array;
  private readonly logSigmas: Float32Array;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  readonly useKarras: boolean;
  private readonly karrasRange: { min: number | undefined; max: number | undefined };
  readonly finalSigmaMin: boolean;
  readonly cosineBetas: boolean;
  readonly prediction: PredictionType;

  constructor(
    readonly name: string,
    cfg: Config,
  ) {
    refuseUnsupported(cfg, {
      use_exponential_sigmas: false,
      use_beta_sigmas: false,
      use_lu_lambdas: false,
      use_flow_sigmas: false,
      use_dynamic_shifting: false,
      variance_type: null,
    });
    this.trainSigmas = trainSigmas(trainAlphasCumprod(cfg));
    this.logSigmas = logTable(this.trainSigmas);
    this.spacing = oneOf(cfg, 'timestep_spacing', TIMESTEP_SPACINGS, 'linspace');
    this.stepsOffset = cfg.int('steps_offset', 0);
    this.useKarras = cfg.bool('use_karras_sigmas', false);
    this.karrasRange = {
      min: cfg.has('sigma_min') ? cfg.num('sigma_min') : undefined,
      max: cfg.has('sigma_max') ? cfg.num('sigma_max') : undefined,
    };
    this.finalSigmaMin = oneOf(cfg, 'final_sigmas_type', ['zero', 'sigma_min'], 'zero') === 'sigma_min';
    this.cosineBetas = cfg.str('beta_schedule', 'linear') === 'squaredcos_cap_v2';
    this.prediction = oneOf(cfg, 'prediction_type', PREDICTION_TYPES, 'epsilon');
  }

  /**
   * Timesteps and sigmas (with the final one appended) for n steps. `roundKarras`: round karras timesteps to
   * integers; `karrasFinalOwnMin`: a sigma_min final sigma is the karras schedule's last rather than the training one.
   */
  schedule(
    n: number,
    { roundKarras, karrasFinalOwnMin }: { roundKarras: boolean; karrasFinalOwnMin: boolean },
  ): { timesteps: number[]; sigmas: number[] } {
    const trainSteps = this.trainSigmas.length;
    checkStepCount(n, trainSteps, this.name);
    let timesteps =
      this.spacing === 'trailing'
        ? spacedTimesteps('trailing', trainSteps, n, 0, true)
        : spacedTimesteps(this.spacing, trainSteps, n + 1, this.stepsOffset, true).slice(0, n);
    let sigmas: number[];
    let final = this.finalSigmaMin ? this.trainSigmas[0] : 0;
    if (this.useKarras) {
      sigmas = karrasSigmas(
        this.karrasRange.min ?? this.trainSigmas[0],
        this.karrasRange.max ?? this.trainSigmas[trainSteps - 1],
        n,
      );
      const t = sigmas.map((s) => sigmaToT(s, this.logSigmas));
      timesteps = roundKarras ? t.map(roundHalfEven) : t;
      if (this.finalSigmaMin && karrasFinalOwnMin) final = sigmas[n - 1];
    } else {
      // np.interp, as diffusers: a leading schedule's first timestep can lie past the table and takes its end.
      sigmas = timesteps.map((t) => interpTable(t, this.trainSigmas));
    }
    requireDistinctSigmas(this.name, n, sigmas);
    return { timesteps, sigmas: [...sigmas, final].map(Math.fround) };
  }
}

/** α_t and σ_t of the VP form from the sigma of the VE form. */
export function alphaSigma(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = Math.fround(1 / Math.sqrt(sigma * sigma + 1));
  const sigmaT = Math.fround(sigma * alpha);
  return { alpha, sigmaT, lambda: Math.fround(Math.log(alpha)) - Math.fround(Math.log(sigmaT)) };
}

/** The model output turned into a prediction of x₀ at noise level sigma. */
export function dataPrediction(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  sigma: number,
): Float32Array {
  if (prediction === 'sample') return modelOutput;
  const { alpha, sigmaT } = alphaSigma(sigma);
  const out = new Float32Array(sample.length);
  for (let k = 0; k < out.length; k++) {
    out[k] =
      prediction === 'epsilon'
        ? (sample[k] - sigmaT * modelOutput[k]) / alpha
        : alpha * sample[k] - sigmaT * modelOutput[k];
  }
  return out;
}
