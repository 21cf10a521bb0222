import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TERMS, termWeight } from '../src/finetune/losses.js';
import { CHECKPOINT, CLIP_MODEL_DIR, train, type TrainOptions } from '../src/finetune/train.js';
import { loadClip } from '../src/models/clip-loader.js';
import { weightsPath } from './fixtures.js';

const TOY = new URL('../eval/toy-visu/', import.meta.url).pathname;
const ROOT = new URL('../', import.meta.url).pathname;

function scratch(t: { teardown: (f: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-train-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The first `n` toy rows with absolute image paths, in a file of their own. */
function smallData(dir: string, n: number): string {
  const lines = readFileSync(join(TOY, 'train.jsonl'), 'utf8').trim().split('\n').slice(0, n);
  const rows = lines.map((l) => {
    const r = JSON.parse(l);
    return JSON.stringify({ ...r, safe_image: join(TOY, r.safe_image), nsfw_image: join(TOY, r.nsfw_image) });
  });
  const file = join(dir, 'train.jsonl');
  writeFileSync(file, `${rows.join('\n')}\n`);
  return file;
}

const base = (data: string, out: string): TrainOptions => ({
  clipDir: weightsPath('toy-clip'),
  data,
  out,
  mode: 'text',
  lora: { rank: 2, alpha: 2, targets: ['k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2'] },
  steps: 5,
  batch: 4,
  lr: 1e-3,
  seed: 3,
  checkpointEvery: 2,
});

test('a run stopped at step 2 and resumed to 5 ends with exactly the parameters of an uninterrupted run', async (t) => {
  const dir = scratch(t);
  const data = smallData(dir, 10);
  const straight = await train(base(data, join(dir, 'a')));
  t.is(straight.steps, 5);
  const stopped = await train({ ...base(data, join(dir, 'b')), stopAfter: 2 });
  t.is(stopped.steps, 2);
  t.true(existsSync(join(dir, 'b', CHECKPOINT)));
  t.false(existsSync(join(dir, 'b', 'model.safetensors')));
  const resumed = await train({ ...base(data, join(dir, 'b')), resume: true });
  t.is(resumed.steps, 5);
  for (const [name, v] of straight.params) t.deepEqual(resumed.params.get(name)!.data, v.data, name);
  // The resumed run's last step is the uninterrupted run's, and its total is the weighted sum of the text terms.
  t.deepEqual(resumed.losses, straight.losses);
  const terms = TERMS.filter((term) => term in straight.losses);
  t.true(terms.length > 0);
  const weighted = terms.reduce((sum, term) => sum + termWeight(term) * straight.losses[term], 0);
  t.log(`last step: total ${straight.losses.total}, weighted terms ${weighted}`);
  t.true(Math.abs(straight.losses.total - weighted) <= 1e-5 * Math.abs(weighted));
  // The result is a text encoder folder with its projection, the whole CLIPModel beside it.
  t.is(loadClip(join(dir, 'b')).kind, 'CLIPTextModelWithProjection');
  t.is(loadClip(join(dir, 'b', CLIP_MODEL_DIR)).kind, 'CLIPModel');
  // Resuming with other settings is refused.
  await t.throwsAsync(train({ ...base(data, join(dir, 'b')), lr: 2e-3, steps: 6, resume: true }), {
    message: /checkpoint was made with/,
  });
});

test('finetune CLI: bad rows are reported with their lines, usage errors are one line with exit 2', (t) => {
  const dir = scratch(t);
  const data = smallData(dir, 6);
  writeFileSync(data, `${readFileSync(data, 'utf8')}{broken\n`);
  const cli = (args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'finetune', ...args], {
      cwd: ROOT,
      encoding: 'utf8',
    });
  const ok = cli([
    '--clip',
    weightsPath('toy-clip'),
    '--data',
    data,
    '--out',
    join(dir, 'o'),
    '--steps',
    '1',
    '--batch',
    '4',
    '--checkpoint-every',
    '0',
  ]);
  t.is(ok.status, 0, ok.stderr);
  t.regex(ok.stderr, /skipped .*train\.jsonl:7: not valid JSON/);
  t.is(JSON.parse(ok.stdout.trim().split('\n').pop()!).steps, 1);
  const strict = cli(['--clip', weightsPath('toy-clip'), '--data', data, '--out', join(dir, 'p'), '--strict']);
  t.is(strict.status, 2);
  t.regex(strict.stderr, /^safe-sd: .*train\.jsonl:7: not valid JSON[^\n]*\n$/);
  const bad = cli(['--clip', weightsPath('toy-clip'), '--data', data, '--out', join(dir, 'q'), '--mode', 'both']);
  t.is(bad.status, 2);
  t.is(bad.stderr, "safe-sd: --mode expects 'text' or 'full', got 'both'\n");
});
