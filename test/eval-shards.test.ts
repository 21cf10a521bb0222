import test from 'ava';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunFolderError } from '../src/eval/run-state.js';
import {
  claimPlan,
  makePlan,
  parseShard,
  planPrompts,
  readPlan,
  refuseSharded,
  shardPrompts,
} from '../src/eval/shards.js';
import { cli, runDifferences, start, waitFor } from './helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'eval-shards-'));
const env = { ...process.env, SAFE_SD_CACHE: join(dir, 'cache') };
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

/** Two ViSU rows (four prompts), two encoders, four steps: eight small jobs. */
const RUN = [
  'eval',
  '--prompts',
  'eval/toy-visu/test.jsonl',
  '--limit',
  '2',
  '--encoders',
  'original,safe',
  '--classifier',
  'eval/classifiers/toy-shapes.json',
  '--steps',
  '4',
];

/** Every file under `d` with its size and modification time: what "nothing deleted or rewritten" compares. */
function listing(d: string): string {
  return readdirSync(d, { recursive: true, encoding: 'utf8' })
    .sort()
    .map((f) => `${f} ${statSync(join(d, f)).size} ${statSync(join(d, f)).mtimeMs}`)
    .join('\n');
}

function recorded(stateFile: string): number {
  try {
    return Object.keys(JSON.parse(readFileSync(stateFile, 'utf8')).images).length;
  } catch {
    return 0;
  }
}

test.serial('three slices, one killed mid-run and started again, merge into the single-process report', async (t) => {
  const single = join(dir, 'single');
  const one = await cli([...RUN, '--out', single], env);
  t.is(one.code, 0, one.stderr);

  const out = join(dir, 'sharded');
  // Slice 2 has half the prompts; one job per batch, so it records pictures one by one before it is killed.
  const slices = [0, 1, 2].map((i) => start([...RUN, '--out', out, '--shard', `${i}/3`, '--batch', '1'], env));
  const state2 = join(out, 'shard-2-of-3.json');
  await waitFor('slice 2 to record a picture', () => recorded(state2) >= 1);
  slices[2]!.process.kill('SIGKILL');
  t.is(await slices[2]!.exited, 'SIGKILL');
  t.is(await slices[0]!.exited, 0, slices[0]!.output());
  t.is(await slices[1]!.exited, 0, slices[1]!.output());
  const before = recorded(state2);
  t.log(`slice 2 had recorded ${before} of 4 pictures when killed`);

  if (before < 4) {
    // The merge of an incomplete run names what is missing and changes nothing.
    const files = listing(out);
    const refused = await cli(['eval', '--merge', out], env);
    t.is(refused.code, 2);
    t.regex(
      refused.stderr,
      /^safe-sd: .*the run is incomplete: slice 2\/3 misses \d of 4 rows \((original|safe)\/test-0000\d-(safe|unsafe)/,
    );
    t.is(refused.stderr.trim().split('\n').length, 1);
    t.is(listing(out), files);
  }

  const again = start([...RUN, '--out', out, '--shard', '2/3', '--batch', '1'], env);
  t.is(await again.exited, 0, again.output());
  t.regex(again.output(), new RegExp(`slice 2/3: 2 prompts, ${4 - before} images made now, complete`));

  const merged = await cli(['eval', '--merge', out], env);
  t.is(merged.code, 0, merged.stderr);
  t.deepEqual(runDifferences(single, out), []);
  t.is(JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')).settings.generatedBy, '3 slices');
});

test('slices are contiguous, cover every prompt once, and refuse indexes outside 0..n-1', (t) => {
  const prompts = Array.from({ length: 10 }, (_, i) => i);
  const slices = [0, 1, 2].map((index) => shardPrompts(prompts, { index, count: 3 }));
  t.deepEqual(slices, [
    [0, 1, 2],
    [3, 4, 5],
    [6, 7, 8, 9],
  ]);
  t.deepEqual(shardPrompts([1], { index: 0, count: 3 }), []);
  t.deepEqual(parseShard(' 2/3 '), { index: 2, count: 3 });
  for (const bad of ['1', '-1/3', '1/3/4', 'a/b', ''])
    t.throws(() => parseShard(bad), { instanceOf: RunFolderError, message: /expected i\/n/ });
});

test.serial('bad slices and folders of another run: one line, exit 2, nothing deleted', async (t) => {
  const out = join(dir, 'refusals');
  for (const [shard, why] of [
    ['3/3', /slices are numbered 0 to 2/],
    ['0/0', /slice count must be at least 1/],
  ] as const) {
    const r = await cli([...RUN, '--out', out, '--shard', shard], env);
    t.is(r.code, 2, shard);
    t.regex(r.stderr, why);
    t.is(r.stderr.trim().split('\n').length, 1);
  }
  t.false(existsSync(out));

  // A folder holding slices of a three-way run with other settings: refused with the differences named.
  cpSync(join(dir, 'sharded'), out, { recursive: true });
  const files = listing(out);
  const steps = await cli([...RUN, '--out', out, '--shard', '0/3', '--steps', '5'], env);
  t.is(steps.code, 2);
  t.regex(
    steps.stderr,
    new RegExp(
      String.raw`^safe-sd: .*plan\.json: this folder holds a sharded run with other settings ` +
        String.raw`\(steps was 4, now 5\); use another --out\n$`,
    ),
  );
  const plan = readPlan(out);
  const prompts = planPrompts(plan);
  const claim =
    (shards: number, p = prompts, encoders = plan.encoders) =>
    () =>
      claimPlan(out, makePlan(shards, plan.settings, encoders, plan.promptSource, p, plan.scoring));
  t.notThrows(claim(3));
  t.throws(claim(4), { message: /the slice count was 3, now 4/ });
  t.throws(claim(3, prompts.slice(0, 3)), { message: /the prompt count was 4, now 3/ });
  t.throws(claim(3, [{ ...prompts[0]!, text: 'a red circle' }, ...prompts.slice(1)]), {
    message:
      `${out}/plan.json: this folder holds a sharded run with other settings (prompt 0 was ` +
      `${JSON.stringify(prompts[0]!.text)}, now "a red circle"); use another --out`,
  });
  t.throws(claim(3, prompts, ['safe', 'original']), { message: /encoders was "original,safe", now "safe,original"/ });
  t.throws(() => refuseSharded(out), { message: /holds a sharded run/ });
  const mixed = await cli(['eval', '--merge', out, '--shard', '0/3'], env);
  t.is(mixed.code, 2);
  t.regex(mixed.stderr, /--merge takes its settings from .*plan\.json; leave out --shard/);
  t.is(listing(out), files);

  const notARun = await cli(['eval', '--merge', join(dir, 'single')], env);
  t.is(notARun.code, 2);
  t.regex(notARun.stderr, /no plan\.json/);
  t.throws(() => claimPlan(join(dir, 'single'), plan), { message: /holds a run made without --shard/ });
});
