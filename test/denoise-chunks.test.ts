import test from 'ava';
import type { F32Tensor } from '../src/core/tensor.js';
import { denoise, type DenoiseJob, type SchedulerLike } from '../src/pipeline/denoise.js';

const scheduler = (): SchedulerLike => ({
  timesteps: [3, 2, 1],
  initNoiseSigma: 1,
  scaleModelInput: (s) => s,
  step: (eps, _t, sample) => sample.map((v, i) => v - 0.1 * eps[i]!),
});

/** Row-dependent output: each sample row's result depends on its own text state and timestep only. */
function recordingUnet(calls: number[]) {
  return async (sample: F32Tensor, timesteps: Float32Array, states: F32Tensor): Promise<F32Tensor> => {
    const [B] = sample.shape;
    calls.push(B!);
    const per = sample.data.length / B!;
    const S = states.data.length / B!;
    const data = sample.data.map((v, i) => {
      const row = Math.floor(i / per);
      return v * 0.5 + states.data[row * S]! + timesteps[row]!;
    });
    return { dtype: 'F32', shape: sample.shape, data };
  };
}

function jobs(): DenoiseJob[] {
  const C = 2 * 2 * 2;
  return [0, 1, 2].map((k) => ({
    id: `j${k}`,
    noise: Float32Array.from({ length: 2 * C }, (_, i) => Math.sin(i + k)),
    n: 2,
    cond: { dtype: 'F32', shape: [2, 1, 1], data: Float32Array.from([k + 1, k + 1]) },
    uncond: k === 1 ? undefined : { dtype: 'F32', shape: [2, 1, 1], data: Float32Array.from([-k, -k]) },
    guidanceScale: 3,
    scheduler: scheduler(),
  }));
}

test('a step split into UNet calls of at most N rows gives the same latents as one call', async (t) => {
  const whole: number[] = [];
  const split: number[] = [];
  const a = await denoise(jobs(), [2, 2, 2], recordingUnet(whole));
  const b = await denoise(jobs(), [2, 2, 2], recordingUnet(split), { maxRowsPerCall: 3 });
  t.deepEqual(whole, [10, 10, 10], '2 guided jobs x 2 images x 2 + 1 unguided x 2');
  t.deepEqual(split, [3, 3, 3, 1, 3, 3, 3, 1, 3, 3, 3, 1]);
  for (const id of ['j0', 'j1', 'j2']) t.deepEqual(b.get(id), a.get(id));
});

test('a batch whose jobs were all cancelled stops after the current call, not the whole step', async (t) => {
  const calls: number[] = [];
  let cancelled = false;
  const unet = recordingUnet(calls);
  const out = await denoise(
    jobs(),
    [2, 2, 2],
    async (s, ts, st) => {
      const r = await unet(s, ts, st);
      cancelled = true;
      return r;
    },
    { maxRowsPerCall: 3, isCancelled: () => cancelled },
  );
  t.deepEqual(calls, [3]);
  t.is(out.size, 0);
});
