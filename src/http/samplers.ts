/**
 * AUTOMATIC1111's sampler names (and the separate "Schedule type" of its 1.9+ API) mapped onto this project's
 * schedulers. Only true equivalents are mapped: A1111's "DPM++ SDE" is a single-step sampler that has no scheduler
 * here, while "DPM++ 2M SDE" is diffusers' sde-dpmsolver++ (`dpmpp-sde`).
 */
import { SCHEDULER_NAMES } from '../pipeline/schedulers/index.js';

interface A1111Sampler {
  name: string;
  aliases: string[];
  /** Ours, by A1111 schedule type: `automatic` is what the sampler uses without one. */
  schedules: Record<string, string>;
}

export const A1111_SAMPLERS: A1111Sampler[] = [
  { name: 'DPM++ 2M', aliases: ['k_dpmpp_2m'], schedules: { automatic: 'dpmpp-2m', karras: 'dpmpp-2m-karras' } },
  { name: 'DPM++ 2M SDE', aliases: ['k_dpmpp_2m_sde'], schedules: { automatic: 'dpmpp-sde' } },
  { name: 'Euler a', aliases: ['k_euler_a', 'k_euler_ancestral'], schedules: { automatic: 'euler-a' } },
  { name: 'Euler', aliases: ['k_euler'], schedules: { automatic: 'euler' } },
  { name: 'LMS', aliases: ['k_lms'], schedules: { automatic: 'lms' } },
  { name: 'Heun', aliases: ['k_heun'], schedules: { automatic: 'heun' } },
  { name: 'DDIM', aliases: [], schedules: { automatic: 'ddim' } },
  { name: 'PLMS', aliases: [], schedules: { automatic: 'pndm' } },
  { name: 'UniPC', aliases: [], schedules: { automatic: 'unipc' } },
  { name: 'DDPM', aliases: [], schedules: { automatic: 'ddpm' } },
];

/** Names before A1111 1.9 folded the schedule into the sampler's name. */
const LEGACY: Record<string, [string, string]> = { 'DPM++ 2M Karras': ['DPM++ 2M', 'karras'] };

/** Ours for an A1111 sampler name and schedule type; undefined = leave the pipeline's default. */
export function schedulerFor(samplerName: string | undefined, scheduleType: string | undefined): string | undefined {
  if (!samplerName) return undefined;
  const [name, legacySchedule] = LEGACY[samplerName] ?? [samplerName, undefined];
  // Our own names are accepted too, so one client can reach every scheduler.
  if (SCHEDULER_NAMES.includes(name) && !scheduleType) return name;
  const sampler = A1111_SAMPLERS.find((s) => s.name === name || s.aliases.includes(name));
  if (!sampler) {
    throw new RangeError(
      `sampler '${samplerName}' is not available (one of ${A1111_SAMPLERS.map((s) => s.name).join(', ')})`,
    );
  }
  const schedule = (legacySchedule ?? scheduleType ?? 'automatic').toLowerCase();
  const ours = sampler.schedules[schedule];
  if (!ours) {
    throw new RangeError(
      `sampler '${sampler.name}' has no schedule type '${scheduleType}' here ` +
        `(${Object.keys(sampler.schedules).join(', ')})`,
    );
  }
  return ours;
}

/** The A1111 name of one of our schedulers, for infotexts. */
export function a1111SamplerName(scheduler: string): { sampler: string; schedule?: string } {
  for (const s of A1111_SAMPLERS) {
    for (const [schedule, ours] of Object.entries(s.schedules)) {
      if (ours === scheduler) return { sampler: s.name, schedule: schedule === 'automatic' ? undefined : 'Karras' };
    }
  }
  return { sampler: scheduler };
}
