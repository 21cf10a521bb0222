import type { Config } from '../../core/config.js';

/**
 * The training noise schedule every diffusers scheduler starts from, computed with torch's float32 steps: the goldens
 * hold schedulers to 1e-5, and sigma at t=999 comes out of a product of 1000 alphas.
 */

const f32 = Math.fround;

/**
 * torch.linspace(start, end, steps, dtype=float32) on the CPU: the step is a float32, each value is start + step * i
 * (or end - step * (steps - 1 - i) in the upper half) rounded once to float32.
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32((e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < half ? s + step * i : e - step * (steps - 1 - i);
  return out;
}

/** Glide's cosine schedule: betas from the squared-cosine alpha-bar, capped at 0.999 (computed in float64). */
function squaredCosineBetas(n: number): Float32Array {
  const alphaBar = (t: number) => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2;
  const betas = new Float32Array(n);
  for (let i = 0; i < n; i++) betas[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999);
  return betas;
}

export const BETA_SCHEDULES = ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const;

/** diffusers' defaults differ per class (Heun defaults to SD's 0.00085..0.012). */
export interface BetaDefaults {
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
}

export const DDPM_BETAS: BetaDefaults = { beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' };

export function trainBetas(cfg: Config, defaults: BetaDefaults = DDPM_BETAS): Float32Array {
  const n = cfg.int('num_train_timesteps', 1000);
  if (cfg.has('trained_betas')) {
    const v = cfg.raw.trained_betas;
    if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number')) {
      throw new Error(`${cfg.file}: config key 'trained_betas' must be a list of ${n} numbers`);
    }
    return Float32Array.from(v as number[]);
  }
  const schedule = oneOf(cfg, 'beta_schedule', BETA_SCHEDULES, defaults.beta_schedule);
  const start = cfg.num('beta_start', defaults.beta_start);
  const end = cfg.num('beta_end', defaults.beta_end);
  if (schedule === 'linear') return torchLinspaceF32(start, end, n);
  if (schedule === 'scaled_linear') return torchLinspaceF32(Math.sqrt(start), Math.sqrt(end), n).map((b) => b * b);
  return squaredCosineBetas(n);
}

/** ᾱ_t of the training schedule, refusing the options this port leaves out. */
export function trainAlphasCumprod(cfg: Config, defaults: BetaDefaults = DDPM_BETAS): Float32Array {
  refuseUnsupported(cfg, { rescale_betas_zero_snr: false, thresholding: false });
  return alphasCumprod(trainBetas(cfg, defaults));
}

/** cumprod(1 - betas): torch accumulates a float32 cumprod in float64 on the CPU and rounds each output. */
export function alphasCumprod(betas: Float32Array): Float32Array {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f32(1 - betas[i]);
    out[i] = acc;
  }
  return out;
}

/** sqrt((1 - ᾱ) / ᾱ) per training timestep, in float32 as torch computes it. */
export function trainSigmas(alphasCumprod: Float32Array): Float32Array {
  return alphasCumprod.map((a) => Math.sqrt(f32(f32(1 - a) / a)));
}

export const TIMESTEP_SPACINGS = ['leading', 'linspace', 'trailing'] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

/** numpy's round: halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(start, stop, num) in float64: start + i * step, the last value exactly stop (one value: start). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const out: number[] = [];
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out.push(num > 1 && i === num - 1 ? stop : i * step + start);
  return out;
}

/** np.arange(start, stop, step) for a negative float step. */
function npArangeDown(start: number, stop: number, step: number): number[] {
  const count = Math.ceil((stop - start) / step);
  return Array.from({ length: count }, (_, i) => start + i * step);
}

/**
 * The inference timesteps, descending, for the three spacings of diffusers' set_timesteps (Table 2 of "Common
 * Diffusion Noise Schedules and Sample Steps are Flawed"). `rounded` is the integer variant (DDIM, DDPM); the
 * sigma schedulers keep linspace timesteps fractional, as float32.
 */
export function spacedTimesteps(
  spacing: TimestepSpacing,
  trainSteps: number,
  n: number,
  stepsOffset: number,
  rounded: boolean,
): number[] {
  if (spacing === 'linspace') {
    const t = npLinspace(0, trainSteps - 1, n).reverse();
    return t.map(rounded ? roundHalfEven : f32);
  }
  if (spacing === 'leading') {
    const ratio = Math.floor(trainSteps / n);
    return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + stepsOffset);
  }
  return npArangeDown(trainSteps, 0, -trainSteps / n).map((t) => roundHalfEven(t) - 1);
}

export function oneOf<T extends string>(cfg: Config, key: string, allowed: readonly T[], fallback: T | string): T {
  const v = cfg.str(key, fallback);
  if (!(allowed as readonly string[]).includes(v)) {
    throw new Error(`${cfg.file}: config key '${key}' is ${JSON.stringify(v)}, expected one of ${allowed.join(', ')}`);
  }
  return v as T;
}

/** Options of diffusers' config that this port does not implement: refuse them instead of ignoring them. */
export function refuseUnsupported(cfg: Config, keys: Record<string, unknown>): void {
  for (const [key, inert] of Object.entries(keys)) {
    const v = cfg.raw[key];
    if (v !== undefined && v !== null && v !== inert) {
      throw new Error(
        `${cfg.file}: config key '${key}' = ${JSON.stringify(v)} is not supported (only ${JSON.stringify(inert)})`,
      );
    }
  }
}

/** ᾱ at an integer training timestep; t = -1 (past the end of the schedule) gives `final`. */
export function alphaCumprodAt(alphasCumprod: Float32Array, t: number, final: number, who: string): number {
  if (t < 0) return final;
  if (!Number.isInteger(t) || t >= alphasCumprod.length) {
    throw new Error(`${who}: timestep ${t} is not an integer training timestep below ${alphasCumprod.length}`);
  }
  return alphasCumprod[t];
}
