/**
 * Child process of the SD 1.5 benchmark: opens the saved UNet, then for each "size:batch" runs one warm-up call and
 * a `steps`-step denoising loop (batch 2 = one guided image: uncond + cond), timing every session.run.
 *   sd15-unet.ts <model.onnx> <session settings JSON> <steps> <size:batch>...
 * The first configuration's peak RSS is reported before the others run, so it is that workload's own.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Config } from '../../core/config.js';
import { createSession, observeRuns, run, type SessionSettings } from '../../onnx/session.js';
import { denoise } from '../../pipeline/denoise.js';
import { createScheduler } from '../../pipeline/schedulers/index.js';
import type { F32Tensor } from '../../core/tensor.js';
import { sd15Inputs } from '../sd15.js';
import { median } from '../measure.js';

const [model, settingsJson, stepsArg, ...configs] = process.argv.slice(2);
const steps = Number(stepsArg);
// SD 1.5's own scheduler config (the toy model was trained with the same schedule).
const SCHEDULER_CONFIG = fileURLToPath(
  new URL('../../../weights/toy-sd/scheduler/scheduler_config.json', import.meta.url),
);

const rssBefore = process.resourceUsage().maxRSS * 1024;
const t0 = performance.now();
const session = await createSession(model, JSON.parse(settingsJson) as SessionSettings);
const openMs = performance.now() - t0;

const unetCall = async (sample: F32Tensor, timesteps: Float32Array, states: F32Tensor) =>
  (
    await run(session, {
      sample,
      timestep: { dtype: 'F32', shape: [timesteps.length], data: timesteps },
      encoder_hidden_states: states,
    })
  ).out_sample;

const results: Array<{
  size: number;
  batch: number;
  stepMs: number;
  firstMs: number;
  overhead: number;
  maxRssBytes: number;
}> = [];
for (const c of configs) {
  const [size, batch] = c.split(':').map(Number);
  const inputs = sd15Inputs(batch, size);
  let t = performance.now();
  await unetCall(inputs.sample, inputs.timestep.data, inputs.encoder_hidden_states);
  const firstMs = performance.now() - t;
  const scheduler = createScheduler('euler', Config.read(SCHEDULER_CONFIG));
  scheduler.setTimesteps(steps);
  const single = sd15Inputs(1, size);
  const job = {
    id: 'bench',
    noise: single.sample.data,
    n: 1,
    cond: single.encoder_hidden_states,
    uncond: batch === 2 ? single.encoder_hidden_states : undefined,
    guidanceScale: batch === 2 ? 7.5 : 1,
    scheduler,
  };
  const runs: number[] = [];
  observeRuns((ms) => runs.push(ms));
  t = performance.now();
  await denoise([job], [4, size, size], unetCall);
  const wall = performance.now() - t;
  observeRuns(undefined);
  const total = runs.reduce((a, b) => a + b, 0);
  results.push({
    size,
    batch,
    stepMs: median(runs),
    firstMs,
    overhead: wall / total,
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
  });
}
await session.release();
console.log(JSON.stringify({ openMs, rssBeforeBytes: rssBefore, results, modelDir: join(model, '..') }));
