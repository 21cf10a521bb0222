import test from 'ava';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportClipModel, exportTextModel, trainedWeights } from '../src/finetune/export.js';
import { loraKey, mergeLora } from '../src/finetune/lora.js';
import { ClipTextEncoder, loadClip } from '../src/models/clip-loader.js';
import { readSafetensors } from '../src/core/safetensors.js';
import type { F32Tensor } from '../src/core/tensor.js';
import { fixture, weightsPath } from './fixtures.js';
import { maxAbsError } from './helpers/compare.js';

// The text encoder folder has text_model. keys, the fine-tuned text projection and the tokenizer.
test('export: LoRA merged into a CLIPTextModelWithProjection folder and a whole CLIPModel that load back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-export-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const clip = loadClip(weightsPath('toy-clip'));
  const module = 'text_model.encoder.layers.1.mlp.fc1';
  const w = clip.weights.get(`${module}.weight`);
  const lora = { rank: 2, alpha: 4, targets: ['fc1'] };
  const A: F32Tensor = {
    dtype: 'F32',
    shape: [2, w.shape[1]],
    data: Float32Array.from({ length: 2 * w.shape[1] }, (_, i) => Math.sin(i)),
  };
  const B: F32Tensor = {
    dtype: 'F32',
    shape: [w.shape[0], 2],
    data: Float32Array.from({ length: 2 * w.shape[0] }, (_, i) => Math.cos(i) * 0.01),
  };
  const params = new Map([
    [loraKey(module, 'A'), A],
    [loraKey(module, 'B'), B],
  ]);
  const weights = trainedWeights(clip, params, { options: lora, modules: [module] });
  exportTextModel(clip, weights, dir);
  exportClipModel(clip, weights, join(dir, 'clip-model'));

  const saved = readSafetensors(join(dir, 'model.safetensors'));
  t.deepEqual(
    [...saved.keys()].filter((k) => !k.startsWith('text_model.')),
    ['text_projection.weight'],
  );
  t.deepEqual(saved.get('text_projection.weight')!.data, weights.get('text_projection.weight')!.data);
  t.deepEqual(saved.get(`${module}.weight`)!.data, mergeLora(w, A, B, lora).data);
  t.true(existsSync(join(dir, 'tokenizer.json')));
  const text = loadClip(dir);
  t.is(text.kind, 'CLIPTextModelWithProjection');
  t.is(text.projectionDim, 64);
  const encoder = await ClipTextEncoder.create(text);
  const ids = new BigInt64Array(77).fill(49407n);
  ids[0] = 49406n;
  ids[1] = 320n;
  t.deepEqual(encoder.hiddenSize, 64);
  const out = await encoder.encode(ids);
  t.deepEqual(out.lastHidden.shape, [1, 77, 64]);
  const whole = loadClip(join(dir, 'clip-model'));
  t.is(whole.kind, 'CLIPModel');
  t.deepEqual(whole.weights.get(`${module}.weight`).data, saved.get(`${module}.weight`)!.data);
  t.is(whole.weights.keys().length, clip.weights.keys().filter((k) => !k.endsWith('position_ids')).length);
  text.weights.close();
  whole.weights.close();
  clip.weights.close();
});

test('export of unchanged weights computes what the source computes (clip golden)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-export-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const clip = loadClip(fixture('clip'));
  exportTextModel(clip, trainedWeights(clip, new Map()), dir);
  const golden = readSafetensors(fixture('clip_golden.safetensors'));
  const ids = golden.get('input_ids')!;
  const encoder = await ClipTextEncoder.create(loadClip(dir));
  const out = await encoder.encode(ids.data as BigInt64Array, ids.shape[1]);
  const err = maxAbsError(out.lastHidden, golden.get('text_last_hidden_state')!);
  t.log(`last_hidden_state max abs error ${err.toExponential(2)}`);
  t.true(err < 2e-5); // near 10x the 1.8e-6 measured
  clip.weights.close();
});
