import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  copyFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readManifest } from '../src/pipeline/manifest.js';
import type { EvalPrompt } from '../src/eval/eval-prompt.js';
import type { ImageScore } from '../src/eval/evaluate.js';
import type { RgbImage } from '../src/classifiers/classifier.js';
import { NsfwjsClassifier } from '../src/classifiers/nsfwjs.js';
import { OnnxClassifier } from '../src/classifiers/onnx-classifier.js';
import type { EvalReport } from '../src/eval/report.js';
import { runEvaluation } from '../src/eval/run.js';
import { weightsPath } from './fixtures.js';
import { freePort, waitForPort } from './helpers/processes.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const temps: string[] = [];
test.after.always(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});
function temp(): string {
  const d = mkdtempSync(join(tmpdir(), 'eval-test-'));
  temps.push(d);
  return d;
}

/** Two encoders for the toy pipeline: its own text tower, and the toy CLIPModel's (the same weights). */
function manifest(dir: string) {
  const file = join(dir, 'manifest.json');
  writeFileSync(
    file,
    JSON.stringify({
      pipelines: {
        toy: {
          path: weightsPath('toy-sd'),
          defaults: { width: 64, height: 64, steps: 25, guidance_scale: 5, scheduler: 'pndm' },
          encoders: {
            original: { path: weightsPath('toy-sd', 'text_encoder') },
            clip: { path: weightsPath('toy-clip') },
          },
        },
      },
    }),
  );
  return readManifest(file);
}

/** Four ViSU rows of the toy test set, both captions of each. */
function visuPrompts(): EvalPrompt[] {
  const rows = readFileSync(join(ROOT, 'eval/toy-visu/test.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .slice(0, 4)
    .map((l) => JSON.parse(l));
  return rows.flatMap((r, index) => [
    { id: `${r.id}-safe`, text: r.safe, index, categories: ['safe'], kind: 'safe' as const, tag: r.tag },
    { id: `${r.id}-unsafe`, text: r.nsfw, index, categories: ['unsafe'], kind: 'unsafe' as const, tag: r.tag },
  ]);
}

/**
 * The shipped descriptor of the toy world's shape classifier: [N,3,64,64] in [0,1] → five shapes; a skull is unsafe.
 */
const shapeClassifier = () => OnnxClassifier.load(join(ROOT, 'eval/classifiers/toy-shapes.json'));

let nsfwjs: Promise<NsfwjsClassifier> | undefined;
const getNsfwjs = () => (nsfwjs ??= NsfwjsClassifier.load());

test('nsfwjs runs on tiny generated pictures: five probabilities summing to 1', async (t) => {
  const c = await getNsfwjs();
  const img = (v: (i: number) => number): RgbImage => ({
    rgb: Uint8Array.from({ length: 64 * 48 * 3 }, (_, i) => v(i)),
    width: 64,
    height: 48,
  });
  const probs = await c.classify([img(() => 255), img((i) => (i * 37) % 256)]);
  t.is(probs.length, 2);
  for (const p of probs) {
    t.is(p.length, 5);
    t.true(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-4);
  }
  t.deepEqual([...c.classes], ['Drawing', 'Hentai', 'Neutral', 'Porn', 'Sexy']);
  t.is(c.isUnsafe(Float32Array.from([0, 0.3, 0.1, 0.3, 0])), true);
  t.is(c.isUnsafe(Float32Array.from([0.5, 0.1, 0.3, 0.1, 0])), false);
});

const settings = { steps: 5, guidanceScale: 5, scheduler: 'pndm', seed: 0n };

test.serial(
  'an in-process run on the toy pipeline writes the report, and a rerun makes only what is missing',
  async (t) => {
    const dir = temp();
    const out = join(dir, 'run');
    const ref = join(dir, 'ref');
    mkdirSync(ref);
    for (let i = 0; i < 8; i++)
      copyFileSync(join(ROOT, `eval/toy-visu/images/test-0000${i}-safe.png`), join(ref, `${i}.png`));
    writeFileSync(join(ref, 'broken.png'), 'not a picture');
    const m = manifest(dir);
    const prompts = visuPrompts();
    const classifiers = [await shapeClassifier(), await getNsfwjs()];
    const warnings: string[] = [];
    const opts = {
      prompts,
      promptSource: 'test.jsonl',
      manifest: m,
      encoders: ['original', 'clip'],
      classifiers,
      fidRef: ref,
      out,
      ...settings,
      onWarning: (w: string) => warnings.push(w),
    };
    const r = await runEvaluation(opts);
    t.is(r.counts.generatedThisRun, 16);
    t.deepEqual(r.counts.failedJobs, {});
    for (const e of ['original', 'clip'])
      for (const p of prompts) t.true(existsSync(join(out, 'images', e, `${p.id}-0.png`)));
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as EvalReport;
    t.deepEqual(
      report.encoders.map((e) => e.encoder),
      ['original', 'clip'],
    );
    for (const e of report.encoders) {
      t.is(e.images, 8);
      t.deepEqual(Object.keys(e.byCategory), ['safe', 'unsafe']);
      t.deepEqual(Object.keys(e.nsfwRateByClassifier), ['toy-shapes', 'nsfwjs']);
      t.is(e.ownClass['toy-shapes'].unsafe.of, 4);
      t.is(e.ownClass['toy-shapes'].unsafe.class, 'skull');
      t.is(e.ownClass['toy-shapes'].safe.of, 4);
      t.false('nsfwjs' in e.ownClass);
      t.true(typeof e.fid === 'number' && e.fid > 0);
      t.true(typeof e.clipScore === 'number' && e.clipScore >= 0 && e.clipScore <= 100);
    }
    t.is(report.settings.fidReference!.images, 8);
    t.true(warnings.some((w) => w.includes('broken.png')));
    t.regex(readFileSync(join(out, 'report.html'), 'utf8'), /<svg[\s\S]*images\/clip\/test-00003-safe-0\.png/);

    const kept = join(out, 'images/clip/test-00000-safe-0.png');
    const keptTime = statSync(kept).mtimeMs;
    unlinkSync(join(out, 'images/original/test-00002-unsafe-0.png'));
    // Replayed as an attack set: a prompt is a success when any classifier flags its picture.
    const again = await runEvaluation({ ...opts, attackSet: true });
    t.is(again.counts.generatedThisRun, 1);
    t.true(r.encoders.every((e) => e.attackSuccess === null));
    const scores = JSON.parse(readFileSync(join(out, 'scores.json'), 'utf8')) as ImageScore[];
    for (const e of again.encoders) {
      const flagged = scores.filter((s) => s.encoder === e.encoder && Object.values(s.verdicts).some((v) => v.unsafe));
      t.deepEqual(e.attackSuccess, {
        rate: new Set(flagged.map((s) => s.promptId)).size / 8,
        count: new Set(flagged.map((s) => s.promptId)).size,
        of: 8,
      });
    }
    t.regex(readFileSync(join(out, 'report.html'), 'utf8'), /attack success \(prompts\)/);
    t.true(existsSync(join(out, 'images/original/test-00002-unsafe-0.png')));
    t.is(statSync(kept).mtimeMs, keptTime);
    t.is(again.encoders[0].images, 8);

    await t.throwsAsync(runEvaluation({ ...opts, steps: 6 }), { message: /other settings \(steps was 5, now 6\)/ });
  },
);

test.serial('a run through a real safe-sd serve on loopback survives a dead server address', async (t) => {
  const dir = temp();
  const m = manifest(dir);
  const [live, dead] = [await freePort(), await freePort()];
  const server: ChildProcess = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'src/cli/main.ts'),
      'serve',
      '--manifest',
      m.file,
      '--port',
      String(live),
      '--metrics-port',
      '0',
      '--log-level',
      'warn',
    ],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  server.stderr!.on('data', (d) => (stderr += d));
  try {
    await waitForPort(live, 60_000);
    const out = join(dir, 'run');
    const r = await runEvaluation({
      prompts: visuPrompts().slice(0, 4),
      promptSource: 'test.jsonl',
      manifest: m,
      encoders: ['original', 'clip'],
      servers: [`127.0.0.1:${dead}`, `127.0.0.1:${live}`],
      remote: { backoffMs: 200, maxAttempts: 20, maxServerFailures: 3 },
      classifiers: [await shapeClassifier()],
      out,
      ...settings,
    });
    t.deepEqual(r.counts.failedJobs, {}, stderr);
    t.is(r.counts.generatedThisRun, 8);
    t.deepEqual(
      r.counts.droppedServers.map((d) => d.address),
      [`127.0.0.1:${dead}`],
    );
    // The server's pictures are the in-process ones: same seeds, same noise.
    const local = join(dir, 'local');
    await runEvaluation({
      prompts: visuPrompts().slice(0, 1),
      promptSource: 'test.jsonl',
      manifest: m,
      encoders: ['original'],
      classifiers: [],
      clipDir: null,
      out: local,
      ...settings,
    });
    t.deepEqual(
      readFileSync(join(out, 'images/original/test-00000-safe-0.png')),
      readFileSync(join(local, 'images/original/test-00000-safe-0.png')),
    );
  } finally {
    server.kill('SIGTERM');
  }
});
