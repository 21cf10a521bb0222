/**
 * An evaluation split into n slices that run as separate processes (machines, Kubernetes Job indexes) into one
 * run folder on shared storage. `<out>/plan.json` fixes what the whole run is (settings, prompts, encoders,
 * scoring); each slice keeps its own resumable state in `<out>/shard-<i>-of-<n>.json` (slices never write the same
 * file), and the merge checks every slice is complete before it scores the pictures and writes the report.
 */
import { existsSync, linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PromptLayout } from '../datasets/prompts.js';
import type { EvalPrompt } from './eval-prompt.js';
import { imageFile, RunFolderError, RunState, type GenerationSettings } from './run-state.js';

/** Slice `index` of `count` (0-based), as `--shard index/count` writes it. */
export interface ShardSpec {
  index: number;
  count: number;
}

export function parseShard(text: string): ShardSpec {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  if (!m) throw new RunFolderError(`--shard ${text}: expected i/n, e.g. 0/3 for the first of three slices`);
  const [index, count] = [Number(m[1]), Number(m[2])];
  if (count < 1) throw new RunFolderError(`--shard ${text}: the slice count must be at least 1`);
  if (index >= count) throw new RunFolderError(`--shard ${text}: slices are numbered 0 to ${count - 1}`);
  return { index, count };
}

/** Contiguous, deterministic: prompt p belongs to the slice with floor(p * n / total) = i. */
export function shardPrompts<T>(prompts: readonly T[], s: ShardSpec): T[] {
  const from = Math.floor((prompts.length * s.index) / s.count);
  const to = Math.floor((prompts.length * (s.index + 1)) / s.count);
  return prompts.slice(from, to);
}

/** What scores the pictures: recorded by the slices, used by the merge. Paths as given on the command line. */
export interface ScoringPlan {
  classifiers: string[];
  /** The CLIPModel folder (resolved from the pipeline when not given), or null for none. */
  clip: string | null;
  fidRef: string | null;
  fidModel: string | null;
  /** The prompt file's layout and whether it is an attack set, as the report names them. */
  promptLayout: PromptLayout | null;
  attackSet: boolean;
}

type StoredPrompt = Omit<EvalPrompt, 'seed'> & { seed?: string };

export interface RunPlan {
  version: 1;
  shards: number;
  settings: GenerationSettings;
  encoders: string[];
  promptSource: string;
  prompts: StoredPrompt[];
  scoring: ScoringPlan;
}

export const PLAN_FILE = 'plan.json';

export function shardStateFile(s: ShardSpec): string {
  return `shard-${s.index}-of-${s.count}.json`;
}

export function makePlan(
  shards: number,
  settings: GenerationSettings,
  encoders: string[],
  promptSource: string,
  prompts: EvalPrompt[],
  scoring: ScoringPlan,
): RunPlan {
  const stored = prompts.map(({ seed, ...p }) => (seed === undefined ? p : { ...p, seed: String(seed) }));
  return { version: 1, shards, settings, encoders, promptSource, prompts: stored, scoring };
}

export function planPrompts(plan: RunPlan): EvalPrompt[] {
  return plan.prompts.map(({ seed, ...p }) => (seed === undefined ? p : { ...p, seed: BigInt(seed) }));
}

export function readPlan(dir: string): RunPlan {
  const file = join(dir, PLAN_FILE);
  if (!existsSync(file))
    throw new RunFolderError(`${dir}: no ${PLAN_FILE}; not a run written by 'safe-sd eval --shard'`);
  let plan: RunPlan;
  try {
    plan = JSON.parse(readFileSync(file, 'utf8')) as RunPlan;
  } catch (e) {
    throw new RunFolderError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (plan.version !== 1 || !Array.isArray(plan.prompts) || !Array.isArray(plan.encoders))
    throw new RunFolderError(`${file}: not a safe-sd run plan`);
  return plan;
}

/** How `found` differs from `want`, in words: what a slice started with other settings is told. */
function planDifferences(found: RunPlan, want: RunPlan): string[] {
  const diffs: string[] = [];
  const say = (what: string, was: unknown, now: unknown) =>
    diffs.push(`${what} was ${JSON.stringify(was)}, now ${JSON.stringify(now)}`);
  if (found.shards !== want.shards) say('the slice count', found.shards, want.shards);
  for (const k of Object.keys(want.settings) as Array<keyof GenerationSettings>) {
    if (String(found.settings[k]) !== String(want.settings[k])) say(k, found.settings[k], want.settings[k]);
  }
  if (found.encoders.join() !== want.encoders.join())
    say('encoders', found.encoders.join(','), want.encoders.join(','));
  if (found.prompts.length !== want.prompts.length) say('the prompt count', found.prompts.length, want.prompts.length);
  else {
    const i = found.prompts.findIndex((p, k) => JSON.stringify(p) !== JSON.stringify(want.prompts[k]));
    if (i >= 0) say(`prompt ${i}`, found.prompts[i]!.text, want.prompts[i]!.text);
  }
  for (const k of Object.keys(want.scoring) as Array<keyof ScoringPlan>) {
    if (JSON.stringify(found.scoring[k]) !== JSON.stringify(want.scoring[k])) say(k, found.scoring[k], want.scoring[k]);
  }
  return diffs;
}

/**
 * The folder's plan, written by whichever slice comes first (a hard link publishes it whole, and fails when another
 * slice got there before), or refused with the differences named when it was written for another run.
 */
export function claimPlan(dir: string, plan: RunPlan): void {
  if (existsSync(join(dir, 'run.json')))
    throw new RunFolderError(`${dir} holds a run made without --shard (run.json); use another --out`);
  const file = join(dir, PLAN_FILE);
  if (!existsSync(file)) {
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, `${JSON.stringify(plan, null, 1)}\n`);
    try {
      linkSync(tmp, file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      unlinkSync(tmp);
    }
  }
  const diffs = planDifferences(readPlan(dir), plan);
  if (diffs.length > 0)
    throw new RunFolderError(
      `${file}: this folder holds a sharded run with other settings (${diffs.join('; ')}); use another --out`,
    );
}

/** Refuses a plain run into a folder that holds slices: it would redo everything under another state file. */
export function refuseSharded(dir: string): void {
  if (existsSync(join(dir, PLAN_FILE)))
    throw new RunFolderError(
      `${dir} holds a sharded run (${PLAN_FILE}): run its slices with --shard i/n, or --merge it`,
    );
}

/** The files each slice must have made, and the recorded images of all slices that have any. */
export function collectShards(dir: string, plan: RunPlan): { states: RunState[]; missing: string[] } {
  const prompts = planPrompts(plan);
  const n = plan.settings.imagesPerPrompt;
  const states: RunState[] = [];
  const missing: string[] = [];
  for (let index = 0; index < plan.shards; index++) {
    const spec = { index, count: plan.shards };
    const name = `slice ${index}/${plan.shards}`;
    if (!existsSync(join(dir, shardStateFile(spec)))) {
      missing.push(`${name} has not started`);
      continue;
    }
    const state = RunState.open(dir, plan.settings, shardStateFile(spec));
    states.push(state);
    const rows = plan.encoders.flatMap((e) =>
      shardPrompts(prompts, spec)
        .filter((p) => Array.from({ length: n }, (_, k) => imageFile(e, p.id, k)).some((f) => !state.has(f)))
        .map((p) => `${e}/${p.id}`),
    );
    const total = plan.encoders.length * shardPrompts(prompts, spec).length;
    if (rows.length > 0)
      missing.push(
        `${name} misses ${rows.length} of ${total} rows ` +
          `(${rows.slice(0, 3).join(', ')}${rows.length > 3 ? ', ...' : ''})`,
      );
  }
  return { states, missing };
}
