import test from 'ava';
import { Config } from '../src/core/config.js';
import { resolveRequest } from '../src/pipeline/request.js';
import { createScheduler, maxStepCounts, SCHEDULER_NAMES } from '../src/pipeline/schedulers/index.js';
import { StepCountError } from '../src/pipeline/schedulers/scheduler.js';
import { weightsPath } from './fixtures.js';
import { toyModelsInfo } from './helpers/toy-models-info.js';

// SD 1.x's scheduler config (leading spacing, steps_offset 1), as the toy model ships it.
const SD = Config.read(weightsPath('toy-sd', 'scheduler', 'scheduler_config.json'));
const LINSPACE = new Config('linspace', { ...SD.raw, timestep_spacing: 'linspace', steps_offset: 0 });
const TRAILING = new Config('trailing', { ...SD.raw, timestep_spacing: 'trailing', steps_offset: 0 });

/** What diffusers can run with SD's config, from its set_timesteps and step (see the comments in the schedulers). */
const SD_LIMITS = {
  pndm: 999, // leading + offset 1 at 1000 steps: timestep 1000, alphas_cumprod[1000] is an IndexError
  ddim: 999,
  ddpm: 999,
  euler: 1000, // np.interp clamps timestep 1000 to the last sigma: a zero-length first step, harmless
  'euler-a': 1000,
  heun: 1000,
  lms: 999, // two equal sigmas at 1000 steps: the Lagrange basis divides by their difference
  'dpmpp-2m': 998, // 999: timesteps 1000 and 999 share a sigma, r0 = h_0 / h = 0 and D1 = inf; 1000: all t = 1
  'dpmpp-sde': 998,
  unipc: 998,
  'dpmpp-2m-karras': 1000, // karras sigmas are distinct at any count
};

const CAP = 1000;
let seed = 1;
/** A deterministic stand-in for torch's generator: uniform values in [-1.5, 1.5). */
function noise(n: number): Float32Array {
  return Float32Array.from({ length: n }, () => {
    seed = (seed * 16807) % 2147483647;
    return (seed / 2147483647 - 0.5) * 3;
  });
}

/** A scheduler's whole loop over a 16-value sample with a smooth fake noise prediction; the final sample. */
function runLoop(name: string, config: Config, steps: number, initial = noise(16)): Float32Array {
  const s = createScheduler(name, config, {}, { noise });
  s.setTimesteps(steps);
  let x: Float32Array = initial.map((v) => v * s.initNoiseSigma);
  for (const t of s.timesteps) {
    const eps = s.scaleModelInput(x, t).map((v) => 0.1 * v + 0.3 * Math.sin(0.01 * t));
    x = s.step(eps, t, x);
  }
  return x;
}

test("the step limits of SD's config are where diffusers' schedulers stop working", (t) => {
  t.deepEqual(maxStepCounts(SD, CAP), SD_LIMITS);
  t.deepEqual(Object.keys(SD_LIMITS).sort(), [...SCHEDULER_NAMES].sort());
});

for (const [label, config] of [
  ['leading, offset 1', SD],
  ['linspace', LINSPACE],
  ['trailing', TRAILING],
] as const) {
  test(`every scheduler runs to finite samples at 1, 2 and its largest step count (${label})`, (t) => {
    const limits = maxStepCounts(config, CAP);
    for (const name of SCHEDULER_NAMES) {
      const max = limits[name];
      t.true(max >= 2, `${name}: max ${max}`);
      for (const n of [1, 2, max]) t.true(runLoop(name, config, n).every(Number.isFinite), `${name} at ${n} steps`);
      if (max < CAP)
        t.throws(() => createScheduler(name, config).setTimesteps(max + 1), { instanceOf: StepCountError });
    }
  });
}

test('below its largest step count every count runs (the refused ones sit at the top)', (t) => {
  for (const config of [SD, LINSPACE, TRAILING]) {
    const limits = maxStepCounts(config, CAP);
    for (const name of SCHEDULER_NAMES) {
      const s = createScheduler(name, config, {}, { noise });
      // A set-up costs up to 20 ms near 1000 steps (karras: O(n * 1000)): the small counts, a stride, and the top.
      const max = limits[name];
      const stride = name.includes('karras') ? 97 : 13;
      const counts = [...Array(max).keys()]
        .map((k) => k + 1)
        .filter((n) => n <= 50 || n % stride === 0 || n > max - 40);
      for (const n of counts) t.notThrows(() => s.setTimesteps(n), `${name} at ${n} steps with ${config.file}`);
    }
  }
});

test('PNDM at one step is the DDIM step from t = 1 to the final alpha, as diffusers computes it', (t) => {
  const x = noise(16);
  const pndm = createScheduler('pndm', SD);
  pndm.setTimesteps(1);
  t.deepEqual(pndm.timesteps, [1]);
  const ddim = createScheduler('ddim', SD);
  ddim.setTimesteps(1);
  const eps = x.map((v) => 0.1 * v);
  const a = pndm.step(eps, 1, x);
  const b = ddim.step(eps, 1, x);
  const err = Math.max(...a.map((v, i) => Math.abs(v - b[i])));
  t.log(`max |PNDM - DDIM| ${err.toExponential(2)}`);
  t.true(err < 1e-5);
});

test('DPM-Solver++ with karras sigmas at one step goes from sigma_max to the predicted clean sample', (t) => {
  const s = createScheduler('dpmpp-2m-karras', SD);
  s.setTimesteps(1);
  t.deepEqual(s.timesteps, [999]);
  const sigma = s.sigmas![0];
  t.is(s.sigmas![1], 0);
  const x = noise(16);
  const eps = x.map((v) => 0.1 * v);
  const out = s.step(eps, 999, x);
  const alpha = Math.fround(1 / Math.sqrt(sigma * sigma + 1));
  const err = Math.max(...out.map((v, i) => Math.abs(v - (x[i] - Math.fround(sigma * alpha) * eps[i]) / alpha)));
  t.log(`sigma_max ${sigma}, max error ${err.toExponential(2)}`);
  t.true(err < 1e-5);
});

const MODELS = toyModelsInfo(maxStepCounts(SD, CAP));

test('request validation refuses the counts a scheduler cannot run, naming the limit', (t) => {
  for (const [scheduler, steps] of [
    ['pndm', 1000],
    ['ddim', 1000],
    ['ddpm', 1000],
    ['lms', 1000],
    ['unipc', 999],
    ['dpmpp-2m', 999],
    ['dpmpp-sde', 1000],
  ] as const) {
    const err = t.throws(() => resolveRequest(MODELS, { prompt: 'a star', scheduler, steps }));
    t.is(err!.name, 'InvalidRequestError');
    t.regex(
      err!.message,
      new RegExp(`^steps ${steps} is outside 1\\.\\.${SD_LIMITS[scheduler]} for scheduler '${scheduler}'`),
    );
  }
  for (const scheduler of SCHEDULER_NAMES) {
    for (const steps of [1, 2, SD_LIMITS[scheduler as keyof typeof SD_LIMITS]]) {
      t.is(resolveRequest(MODELS, { prompt: 'a star', scheduler, steps }).steps, steps);
    }
  }
});
