import type { F32Tensor } from '../core/tensor.js';

/** The part of a scheduler the denoising loop drives (see src/pipeline/schedulers/). */
export interface SchedulerLike {
  readonly timesteps: number[];
  readonly initNoiseSigma: number;
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array;
}

/** One UNet evaluation on a batch: sample [B,C,h,w], one timestep per sample, text states [B,S,D]. */
export type UnetCall = (
  sample: F32Tensor,
  timesteps: Float32Array,
  encoderHiddenStates: F32Tensor,
) => Promise<F32Tensor>;

/** One request's share of a denoising batch: its own latents, conditioning and scheduler state. */
export interface DenoiseJob {
  id: string;
  /** Initial noise [n,C,h,w], before init_noise_sigma. */
  noise: Float32Array;
  /** Images in this job. */
  n: number;
  /** Prompt embeddings [n,S,D]. */
  cond: F32Tensor;
  /** Negative-prompt embeddings [n,S,D]; absent when guidance <= 1 (the UNet batch is then not doubled). */
  uncond?: F32Tensor;
  guidanceScale: number;
  scheduler: SchedulerLike;
}

export interface DenoiseHooks {
  onStep?(jobId: string, step: number, total: number): void;
  /** Polled before each UNet call; a cancelled job leaves the batch within one step. */
  isCancelled?(jobId: string): boolean;
  /** Lets the event loop turn between steps (cancel messages arrive in worker threads). */
  yieldBetweenSteps?(): Promise<void>;
  /** Each job's scaled UNet input and guided output of a step, before the scheduler step (for previews). */
  onModelOutput?(jobId: string, step: number, modelInput: Float32Array, modelOutput: Float32Array, t: number): void;
  /**
   * Most samples in one UNet call; a larger step is split into several calls (the batch dimension is independent),
   * so one call's time and memory stay bounded and a batch whose jobs were all cancelled stops after the current call.
   */
  maxRowsPerCall?: number;
}

/** The UNet over the rows of a batch in calls of at most `maxRows`; undefined if every job was cancelled between. */
async function chunkedUnet(
  unet: UnetCall,
  sample: F32Tensor,
  timesteps: Float32Array,
  states: F32Tensor,
  maxRows: number,
  allCancelled: () => boolean,
): Promise<F32Tensor | undefined> {
  const [batch, ...rest] = sample.shape;
  if (batch <= maxRows) return unet(sample, timesteps, states);
  const per = sample.data.length / batch;
  const [, S, D] = states.shape;
  const parts: Float32Array[] = [];
  for (let start = 0; start < batch; start += maxRows) {
    if (start > 0 && allCancelled()) return undefined;
    const end = Math.min(batch, start + maxRows);
    const out = await unet(
      { dtype: 'F32', shape: [end - start, ...rest], data: sample.data.slice(start * per, end * per) },
      timesteps.slice(start, end),
      { dtype: 'F32', shape: [end - start, S, D], data: states.data.slice(start * S * D, end * S * D) },
    );
    parts.push(out.data);
  }
  return { dtype: 'F32', shape: sample.shape, data: concat(parts) };
}

/** The arrays end to end in one. */
export function concat(parts: Float32Array[]): Float32Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Float32Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** The text states of a batch, in the order of its UNet inputs; built once per set of active jobs, not per step. */
function batchStates(active: DenoiseJob[]): F32Tensor {
  const parts: Float32Array[] = [];
  let batch = 0;
  for (const j of active) {
    if (j.uncond) parts.push(j.uncond.data);
    parts.push(j.cond.data);
    batch += j.uncond ? 2 * j.n : j.n;
  }
  const [S, D] = active.length ? active[0].cond.shape.slice(1) : [0, 0];
  return { dtype: 'F32', shape: [batch, S, D], data: concat(parts) };
}

/**
 * The diffusers denoising loop for several jobs at once: every step concatenates the model inputs of all active jobs
 * (uncond then cond for guided ones, as StableDiffusionPipeline orders them) into one UNet call, then applies each
 * job's guidance and scheduler step. All jobs must share the latent shape and the timestep schedule.
 */
export async function denoise(
  jobs: DenoiseJob[],
  latentShape: [number, number, number],
  unet: UnetCall,
  hooks: DenoiseHooks = {},
): Promise<Map<string, Float32Array>> {
  const [C, h, w] = latentShape;
  const per = C * h * w;
  const timesteps = jobs[0]?.scheduler.timesteps ?? [];
  for (const j of jobs) {
    if (j.noise.length !== j.n * per)
      throw new Error(`job ${j.id}: noise holds ${j.noise.length} values, expected ${j.n}x${C}x${h}x${w}`);
    if (j.scheduler.timesteps.length !== timesteps.length || j.scheduler.timesteps.some((t, i) => t !== timesteps[i])) {
      throw new Error(`job ${j.id}: its timestep schedule differs from the batch's; it cannot share UNet calls`);
    }
  }
  const latents = new Map<string, Float32Array>();
  for (const j of jobs)
    latents.set(
      j.id,
      j.noise.map((v) => v * j.scheduler.initNoiseSigma),
    );
  let active = [...jobs];
  let states = batchStates(active);
  const total = timesteps.length;
  for (let i = 0; i < total; i++) {
    if (hooks.yieldBetweenSteps) await hooks.yieldBetweenSteps();
    if (hooks.isCancelled) {
      const kept = active.filter((j) => !hooks.isCancelled!(j.id));
      if (kept.length !== active.length) states = batchStates(kept);
      active = kept;
    }
    if (active.length === 0) break;
    const t = timesteps[i];
    const inputs: Float32Array[] = [];
    const scaledInputs: Float32Array[] = [];
    for (const j of active) {
      const scaled = j.scheduler.scaleModelInput(latents.get(j.id)!, t);
      if (j.uncond) inputs.push(scaled);
      inputs.push(scaled);
      scaledInputs.push(scaled);
    }
    const batch = states.shape[0];
    const allCancelled = () => !!hooks.isCancelled && active.every((j) => hooks.isCancelled!(j.id));
    const sample: F32Tensor = { dtype: 'F32', shape: [batch, C, h, w], data: concat(inputs) };
    const maxRows = hooks.maxRowsPerCall ?? batch;
    const out = await chunkedUnet(unet, sample, new Float32Array(batch).fill(t), states, maxRows, allCancelled);
    if (!out) {
      active = [];
      break;
    }
    let off = 0;
    for (const [a, j] of active.entries()) {
      const size = j.n * per;
      let eps: Float32Array;
      if (j.uncond) {
        const u = out.data.subarray(off, off + size);
        const c = out.data.subarray(off + size, off + 2 * size);
        eps = new Float32Array(size);
        for (let k = 0; k < size; k++) eps[k] = u[k] + j.guidanceScale * (c[k] - u[k]);
        off += 2 * size;
      } else {
        eps = out.data.slice(off, off + size);
        off += size;
      }
      hooks.onModelOutput?.(j.id, i + 1, scaledInputs[a]!, eps, t);
      latents.set(j.id, j.scheduler.step(eps, t, latents.get(j.id)!));
      hooks.onStep?.(j.id, i + 1, total);
    }
  }
  const done = new Map<string, Float32Array>();
  for (const j of active) done.set(j.id, latents.get(j.id)!);
  return done;
}
