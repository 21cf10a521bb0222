import test from 'ava';
import { readFileSync } from 'node:fs';
import { Config } from '../src/core/config.js';
import { readSafetensors } from '../src/core/safetensors.js';
import type { Tensor } from '../src/core/tensor.js';
import { createScheduler, SCHEDULER_NAMES } from '../src/pipeline/schedulers/index.js';
import { fixture } from './fixtures.js';
import { relError } from './helpers/compare.js';

interface GoldenCase {
  key: string;
  class: string;
  config: Record<string, unknown>;
  step_kwargs: { eta?: number };
  num_inference_steps: number;
  timesteps: number[];
  sigmas: number[] | null;
  init_noise_sigma: number;
  order: number;
  noise_draws: number;
  n_model_calls: number;
}

const golden = JSON.parse(readFileSync(fixture('scheduler_golden.json'), 'utf8')) as { cases: GoldenCase[] };
const tensors = readSafetensors(fixture('scheduler_golden.safetensors'));

function tensor(name: string): Float32Array {
  const t: Tensor | undefined = tensors.get(name);
  if (!t || !(t.data instanceof Float32Array))
    throw new Error(`scheduler_golden.safetensors: no float32 tensor '${name}'`);
  return t.data;
}

/**
 * Bound on the error measure of test/fixtures/README.md (max |a − b| over the largest magnitude of the reference):
 * near 10x the largest measured, 7.6e-7.
 */
const TOLERANCE = 8e-6;
const f32 = Math.fround;

/** The goldens' fake UNet: eps = 0.1 * input + 0.5 * sin(0.01 * t) * base, in float32. */
function fakeModel(input: Float32Array, t: number, base: Float32Array): Float32Array {
  const s = f32(0.5 * f32(Math.sin(f32(0.01 * t))));
  return input.map((x, i) => f32(0.1 * x) + f32(s * base[i]));
}

for (const c of golden.cases) {
  const extra = Object.entries({ ...c.config, ...c.step_kwargs })
    .filter(([k]) => ['use_karras_sigmas', 'algorithm_type', 'timestep_spacing', 'eta'].includes(k))
    .map(([k, v]) => `${k}=${v}`);
  test(`golden ${c.key}: ${c.class} ${extra.join(' ')} ${c.num_inference_steps} steps`, (t) => {
    let draws = 0;
    const noise = (n: number) => {
      const z = tensor(`${c.key}.noise.${draws++}`);
      t.is(z.length, n);
      return z;
    };
    const config = new Config(`scheduler_golden.json#${c.key}`, c.config);
    const scheduler = createScheduler(c.class, config, {}, { noise, eta: c.step_kwargs.eta });
    scheduler.setTimesteps(c.num_inference_steps);

    t.is(scheduler.timesteps.length, c.n_model_calls);
    // The schedule is float32 arithmetic mirrored step by step: it must come out bit-exact, except karras timesteps
    // interpolated in numpy's float32 log, whose SIMD kernel is not correctly rounded (an ulp or two of t).
    t.is(scheduler.timesteps.length, c.timesteps.length);
    scheduler.timesteps.forEach((v, i) => {
      const want = c.timesteps[i];
      t.true(Number.isInteger(want) ? v === want : Math.abs(v - want) <= 1e-4, `timestep ${i}: ${v}, expected ${want}`);
    });
    t.deepEqual(scheduler.sigmas ?? null, c.sigmas);
    t.is(scheduler.initNoiseSigma, c.init_noise_sigma);
    t.is(scheduler.order, c.order);

    const base = tensor('fake_model_base');
    let sample: Float32Array = tensor('initial_noise').map((x) => x * scheduler.initNoiseSigma);
    let worst = 0;
    scheduler.timesteps.forEach((ts, i) => {
      const input = scheduler.scaleModelInput(sample, ts);
      const inErr = relError(input, tensor(`${c.key}.model_input.${i}`));
      sample = scheduler.step(fakeModel(input, ts, base), ts, sample);
      const outErr = relError(sample, tensor(`${c.key}.sample.${i}`));
      t.true(inErr <= TOLERANCE && outErr <= TOLERANCE, `call ${i} (t=${ts}): model input ${inErr}, sample ${outErr}`);
      worst = Math.max(worst, inErr, outErr);
    });
    t.is(draws, c.noise_draws);
    t.log(`max relative error ${worst.toExponential(2)}`);
  });
}

test('unknown scheduler names are refused with the valid ones listed', (t) => {
  const config = new Config('scheduler_config.json', { _class_name: 'PNDMScheduler' });
  const err = t.throws(() => createScheduler('euler_a', config));
  t.regex(err!.message, /unknown scheduler 'euler_a'.*dpmpp-2m-karras/);
  t.deepEqual(SCHEDULER_NAMES, [
    'pndm',
    'ddim',
    'euler',
    'euler-a',
    'lms',
    'dpmpp-2m',
    'dpmpp-2m-karras',
    'dpmpp-sde',
    'unipc',
    'heun',
    'ddpm',
  ]);
});

test('a stochastic scheduler without a noise source says so', (t) => {
  const s = createScheduler('euler-a', Config.read(fixture('tiny-sd', 'scheduler', 'scheduler_config.json')));
  s.setTimesteps(4);
  const x = new Float32Array(4);
  t.throws(() => s.step(x, s.timesteps[0], x), { message: /draws noise/ });
});

test('the config class of a checkpoint is used when no name is given', (t) => {
  const s = createScheduler(undefined, Config.read(fixture('tiny-sd', 'scheduler', 'scheduler_config.json')));
  s.setTimesteps(4);
  t.deepEqual(s.timesteps, [751, 501, 501, 251, 1]);
});
