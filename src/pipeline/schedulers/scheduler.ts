import { InvalidRequestError } from '../engine-api.js';

/** What every scheduler offers the denoising loop; the names follow diffusers' SchedulerMixin. */
export interface Scheduler {
  /** The timesteps of the loop, one model call each (Heun repeats inner ones for its second call). */
  readonly timesteps: number[];
  /** Noise level per timestep plus the final one, for the k-diffusion style schedulers. */
  readonly sigmas?: number[];
  /** The initial latent noise is multiplied by this. */
  readonly initNoiseSigma: number;
  /** Model calls per solver step (2 for Heun). */
  readonly order: number;
  setTimesteps(numInferenceSteps: number): void;
  /** The model's input at timestep t (the sigma schedulers divide by sqrt(sigma² + 1)). */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  /** The sample at the next timestep, given the model's output at t. */
  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array;
}

/** Standard normal draws, n values at a time: a torch-compatible generator, or recorded noise replayed. */
export type NoiseSource = (n: number) => Float32Array;

export interface SchedulerOptions {
  /** Needed by the stochastic schedulers (DDIM with eta > 0, Euler ancestral, DDPM, SDE-DPM-Solver++). */
  noise?: NoiseSource;
  /** DDIM's eta: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling. */
  eta?: number;
}

export function drawNoise(source: NoiseSource | undefined, n: number, who: string): Float32Array {
  if (!source) throw new Error(`${who} draws noise: give it a noise source`);
  const noise = source(n);
  if (noise.length !== n) throw new Error(`${who}: the noise source gave ${noise.length} values, expected ${n}`);
  return noise;
}

/**
 * Where the loop stands when step() is first called at t: diffusers takes the second match when t occurs twice
 * (Heun's repeated timesteps, or img2img starting mid-schedule) so the first step is not skipped.
 */
export function indexForTimestep(timesteps: readonly number[], t: number, who: string, fallbackToLast = false): number {
  const matches: number[] = [];
  timesteps.forEach((v, i) => {
    if (v === t) matches.push(i);
  });
  if (matches.length === 0) {
    if (fallbackToLast) return timesteps.length - 1;
    throw new Error(`${who}: timestep ${t} is not one of the scheduler's timesteps`);
  }
  return matches.length > 1 ? matches[1] : matches[0];
}

export function requireTimesteps(timesteps: readonly number[], who: string): void {
  if (timesteps.length === 0) throw new Error(`${who}: call setTimesteps() before step()`);
}

export function checkLengths(who: string, ...arrays: Float32Array[]): void {
  for (const a of arrays) {
    if (a.length !== arrays[0].length) throw new Error(`${who}: tensors of ${arrays[0].length} and ${a.length} values`);
  }
}

/** What the model predicts: the noise, v = ᾱ^½ ε − (1−ᾱ)^½ x₀ (SD 2.x 768), or the clean sample. */
export const PREDICTION_TYPES = ['epsilon', 'v_prediction', 'sample'] as const;
export type PredictionType = (typeof PREDICTION_TYPES)[number];

export function checkStepCount(n: number, trainSteps: number, who: string): void {
  if (!Number.isInteger(n) || n < 1 || n > trainSteps) {
    throw new Error(`${who}: ${n} inference steps, expected an integer from 1 to num_train_timesteps (${trainSteps})`);
  }
}

/**
 * A step count the scheduler's schedule cannot run with this model's config (diffusers fails on it too: an
 * IndexError, or a division by a zero step that fills the image with NaN). A request error, not a crash.
 */
export class StepCountError extends InvalidRequestError {
  override name = 'StepCountError';
}

/** The schedulers that index ᾱ by timestep: every timestep must be a training timestep. */
export function requireTrainTimesteps(who: string, n: number, timesteps: readonly number[], trainSteps: number): void {
  const past = timesteps.find((t) => t >= trainSteps);
  if (past !== undefined) {
    throw new StepCountError(
      `${who} cannot run ${n} steps with this model's schedule: ` +
        `timestep ${past} lies past its ${trainSteps} training timesteps`,
    );
  }
}

/** The multistep solvers divide by the gap between consecutive noise levels: two equal ones give NaN. */
export function requireDistinctSigmas(who: string, n: number, sigmas: readonly number[]): void {
  for (let i = 1; i < n; i++) {
    if (!(sigmas[i] < sigmas[i - 1])) {
      throw new StepCountError(
        `${who} cannot run ${n} steps with this model's schedule: steps ${i - 1} and ${i} share the noise level ` +
          `${sigmas[i]}, which its multistep update divides by`,
      );
    }
  }
}
