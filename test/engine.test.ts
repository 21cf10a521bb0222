import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalEngine, createEngine } from '../src/pipeline/engine.js';
import type { EngineHooks } from '../src/pipeline/engine-api.js';
import { DEFAULT_MANIFEST, readManifest } from '../src/pipeline/manifest.js';
import { fixture, weightsPath } from './fixtures.js';

process.env.SAFE_SD_CACHE ??= mkdtempSync(join(tmpdir(), 'graph-cache-'));

const engine = new LocalEngine(readManifest(DEFAULT_MANIFEST));
test.after.always(() => engine.close());

const hooks = (steps: Map<string, number>, cancel = new Set<string>()): EngineHooks => ({
  onProgress: (id, step) => steps.set(id, step),
  isCancelled: (id) => cancel.has(id),
});

test('a request gives the same PNG alone and batched with others (shared UNet calls)', async (t) => {
  const a = engine.resolve({ prompt: 'a blue circle on a black background', seed: 3n, steps: 4 });
  const b = engine.resolve({
    prompt: 'a green square on a gray background',
    seed: 4n,
    steps: 4,
    guidanceScale: 1,
    negativePrompt: 'x',
  });
  const c = engine.resolve({ prompt: 'a red star on a white background', seed: 5n, steps: 4, numImages: 2 });
  const steps = new Map<string, number>();
  const alone = await engine.runBatch([{ id: 'a', request: a }], hooks(steps));
  const together = await engine.runBatch(
    [
      { id: 'a', request: a },
      { id: 'b', request: b },
      { id: 'c', request: c },
    ],
    hooks(steps),
  );
  const pa = alone.get('a')!;
  const ta = together.get('a')!;
  t.true(pa.ok && ta.ok);
  if (!pa.ok || !ta.ok) return;
  t.deepEqual(ta.images[0].png, pa.images[0].png);
  const tc = together.get('c')!;
  t.true(tc.ok && tc.images.length === 2);
  // PNDM's PLMS warm-up repeats one timestep: 4 steps are 5 UNet calls, as in diffusers' progress bar.
  t.is(steps.get('b'), 5);
});

test('a cancelled job leaves the batch and reports it; the others finish as they would alone', async (t) => {
  const a = engine.resolve({ prompt: 'a blue circle', seed: 1n, steps: 6 });
  const d = engine.resolve({ prompt: 'a white skull', seed: 2n, steps: 6 });
  const steps = new Map<string, number>();
  const cancel = new Set<string>();
  const h = hooks(steps, cancel);
  const out = await engine.runBatch(
    [
      { id: 'drop', request: d },
      { id: 'keep', request: a },
    ],
    {
      ...h,
      onProgress: (id, step, total) => {
        h.onProgress(id, step, total);
        if (id === 'drop' && step === 2) cancel.add('drop');
      },
    },
  );
  t.deepEqual(out.get('drop'), { ok: false, failure: 'cancelled', message: 'cancelled' });
  t.is(steps.get('drop'), 2);
  const kept = out.get('keep')!;
  const alone = (await engine.runBatch([{ id: 'keep', request: a }], hooks(new Map()))).get('keep')!;
  t.true(kept.ok && alone.ok);
  if (kept.ok && alone.ok) t.deepEqual(kept.images[0].png, alone.images[0].png);
});

test('clip skip conditions on an earlier layer and changes the picture', async (t) => {
  const base = engine.resolve({ prompt: 'a yellow triangle on a white background', seed: 9n, steps: 3 });
  const [x, y] = await Promise.all([engine.generate(base), engine.generate({ ...base, clipSkip: 2 })]);
  t.notDeepEqual(x.delivered[0]!.png, y.delivered[0]!.png);
  t.throws(() => engine.resolve({ ...base, clipSkip: 9 }), { message: 'clip skip 9 is outside 0..4' });
});

test('an encoder whose hidden size differs from the UNet cross-attention size is refused at load', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'manifest-'));
  const file = join(dir, 'm.json');
  writeFileSync(
    file,
    JSON.stringify({
      pipelines: {
        toy: {
          path: weightsPath('toy-sd'),
          encoders: {
            original: { path: weightsPath('toy-sd', 'text_encoder') },
            tiny: { path: fixture('tiny-sd', 'text_encoder') },
          },
        },
      },
    }),
  );
  await t.throwsAsync(createEngine({ manifest: file }), {
    message: /encoder 'tiny' of pipeline 'toy' has hidden size 32, but the UNet's cross_attention_dim is 64/,
  });
});

test('requests are validated with readable messages', (t) => {
  t.throws(() => engine.resolve({ prompt: '  ' }), { message: 'prompt is empty' });
  t.throws(() => engine.resolve({ prompt: 'x', encoder: 'nope' }), {
    message: /unknown encoder 'nope' for pipeline 'toy' \(available: original/,
  });
  t.throws(() => engine.resolve({ prompt: 'x', steps: 0.5 }), { message: /steps 0.5 is outside/ });
  t.throws(() => engine.resolve({ prompt: 'x', height: 12 }), { message: 'height 12 is not a positive multiple of 8' });
});
