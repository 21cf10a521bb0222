import { Config } from '../../core/config.js';
import { DDIMScheduler } from './ddim.js';
import { DDPMScheduler } from './ddpm.js';
import { DPMSolverMultistepScheduler } from './dpm-solver-multistep.js';
import { EulerAncestralDiscreteScheduler } from './euler-ancestral-discrete.js';
import { EulerDiscreteScheduler } from './euler-discrete.js';
import { HeunDiscreteScheduler } from './heun-discrete.js';
import { LMSDiscreteScheduler } from './lms-discrete.js';
import { PNDMScheduler } from './pndm.js';
import { StepCountError, type Scheduler, type SchedulerOptions } from './scheduler.js';
import { UniPCMultistepScheduler } from './unipc-multistep.js';

export type { NoiseSource, Scheduler, SchedulerOptions } from './scheduler.js';

type Factory = (cfg: Config, options: SchedulerOptions) => Scheduler;

/** diffusers class names, as `_class_name` in a scheduler_config.json. */
const CLASSES: Record<string, Factory> = {
  PNDMScheduler: (cfg) => new PNDMScheduler(cfg),
  DDIMScheduler: (cfg, o) => new DDIMScheduler(cfg, o),
  DDPMScheduler: (cfg, o) => new DDPMScheduler(cfg, o),
  EulerDiscreteScheduler: (cfg) => new EulerDiscreteScheduler(cfg),
  EulerAncestralDiscreteScheduler: (cfg, o) => new EulerAncestralDiscreteScheduler(cfg, o),
  LMSDiscreteScheduler: (cfg) => new LMSDiscreteScheduler(cfg),
  HeunDiscreteScheduler: (cfg) => new HeunDiscreteScheduler(cfg),
  DPMSolverMultistepScheduler: (cfg, o) => new DPMSolverMultistepScheduler(cfg, o),
  UniPCMultistepScheduler: (cfg) => new UniPCMultistepScheduler(cfg),
};

/** The short names users pick from: a class plus the config it needs (A1111's sampler names). */
const NAMES: Record<string, { className: string; config: Record<string, unknown> }> = {
  pndm: { className: 'PNDMScheduler', config: { skip_prk_steps: true } },
  ddim: { className: 'DDIMScheduler', config: {} },
  euler: { className: 'EulerDiscreteScheduler', config: {} },
  'euler-a': { className: 'EulerAncestralDiscreteScheduler', config: {} },
  lms: { className: 'LMSDiscreteScheduler', config: {} },
  'dpmpp-2m': { className: 'DPMSolverMultistepScheduler', config: { algorithm_type: 'dpmsolver++', solver_order: 2 } },
  'dpmpp-2m-karras': {
    className: 'DPMSolverMultistepScheduler',
    config: { algorithm_type: 'dpmsolver++', solver_order: 2, use_karras_sigmas: true },
  },
  'dpmpp-sde': {
    className: 'DPMSolverMultistepScheduler',
    config: { algorithm_type: 'sde-dpmsolver++', solver_order: 2 },
  },
  unipc: { className: 'UniPCMultistepScheduler', config: {} },
  heun: { className: 'HeunDiscreteScheduler', config: {} },
  ddpm: { className: 'DDPMScheduler', config: {} },
};

export const SCHEDULER_NAMES = Object.keys(NAMES);

/**
 * A scheduler from a model's scheduler_config.json (its beta schedule, spacing, prediction type) switched to the
 * named sampler, as diffusers' `Scheduler.from_config(pipe.scheduler.config)` does. `name`: a short name or a
 * diffusers class name; undefined keeps the config's `_class_name`. `overrides` replace config keys.
 */
export function createScheduler(
  name: string | undefined,
  config: Config,
  overrides: Record<string, unknown> = {},
  options: SchedulerOptions = {},
): Scheduler {
  const className = name === undefined ? config.str('_class_name') : (NAMES[name]?.className ?? name);
  const factory = CLASSES[className];
  if (!factory) {
    const what = name === undefined ? `${config.file}: scheduler class '${className}'` : `unknown scheduler '${name}'`;
    throw new Error(
      `${what} is not supported; valid names: ${SCHEDULER_NAMES.join(', ')} (or ${Object.keys(CLASSES).join(', ')})`,
    );
  }
  const preset = name !== undefined ? (NAMES[name]?.config ?? {}) : {};
  return factory(new Config(config.file, { ...config.raw, ...preset, ...overrides }), options);
}

/**
 * Per short name, the largest step count up to `cap` whose schedule the scheduler can run with this config. The
 * refused counts sit at the top of the range (they come from timestep collisions once steps near the training
 * timesteps), so every count below the largest runs; test/scheduler-step-limits.test.ts checks that for SD's
 * configs. A name the config cannot take at all (an unsupported option) is left out: its requests fail as before.
 */
export function maxStepCounts(config: Config, cap: number): Record<string, number> {
  const limits: Record<string, number> = {};
  const top = Math.min(cap, config.int('num_train_timesteps', 1000));
  for (const name of SCHEDULER_NAMES) {
    let scheduler: Scheduler;
    try {
      scheduler = createScheduler(name, config);
    } catch {
      continue;
    }
    for (let n = top; n >= 1; n--) {
      try {
        scheduler.setTimesteps(n);
        limits[name] = n;
        break;
      } catch (e) {
        if (!(e instanceof StepCountError)) throw e;
      }
    }
  }
  return limits;
}
