import test from 'ava';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildClipTextGraph, readClipTextConfig } from '../src/models/clip.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';
import { ClipTextEncoder, ClipVisionEncoder, clipLogits, loadClip, logitScale } from '../src/models/clip-loader.js';
import { Config } from '../src/core/config.js';
import { readSafetensors, writeSafetensors } from '../src/core/safetensors.js';
import type { F32Tensor, Tensor } from '../src/core/tensor.js';
import { MemoryWeights, SafetensorsWeights } from '../src/core/weights.js';
import { fixture, weightsPath } from './fixtures.js';
import { maxAbsError } from './helpers/compare.js';

/** Near 10x the largest error measured against transformers (2.4e-6, the vision tower's last hidden state). */
const TOL = 3e-5;

function close(
  t: { true: (v: boolean, msg?: string) => void; log: (...v: unknown[]) => void },
  name: string,
  got: F32Tensor,
  want: Tensor,
  tol = TOL,
): void {
  const err = maxAbsError(got, want);
  t.log(`${name}: max abs error ${err.toExponential(2)}`);
  t.true(err < tol, `${name}: max abs error ${err} over ${tol}`);
}

const textGolden = readSafetensors(fixture('text_encoder_golden.safetensors'));

for (const layout of ['tiny-sd/text_encoder', 'text_encoder_v4_layout']) {
  test(`text encoder matches transformers (${layout})`, async (t) => {
    const clip = loadClip(fixture(...layout.split('/')));
    t.is(clip.kind, 'CLIPTextModel');
    t.is(clip.projectionDim, undefined);
    const enc = await ClipTextEncoder.create(clip);
    t.is(enc.hiddenSize, 32);
    const out = await enc.encode(textGolden.get('input_ids')!.data as BigInt64Array);
    close(t, 'last_hidden_state', out.lastHidden, textGolden.get('last_hidden_state')!);
    close(t, 'pooler_output', out.pooled, textGolden.get('pooler_output')!);
    t.is(out.hiddenStates.length, 3);
    out.hiddenStates.forEach((h, i) => {
      close(t, `hidden_states.${i}`, h, textGolden.get(`hidden_states.${i}`)!);
    });
    t.is(out.textEmbeds, undefined);
    clip.weights.close();
  });
}

/** final_layer_norm in float64: the reference for clip skip (diffusers applies it to the chosen state). */
function layerNorm64(x: Tensor, weight: Tensor, bias: Tensor, eps: number): F32Tensor {
  const [xd, w, b] = [x.data as Float32Array, weight.data as Float32Array, bias.data as Float32Array];
  const D = w.length;
  const out = new Float32Array(xd.length);
  for (let row = 0; row < xd.length; row += D) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += xd[row + i] / D;
    let variance = 0;
    for (let i = 0; i < D; i++) variance += (xd[row + i] - mean) ** 2 / D;
    for (let i = 0; i < D; i++) out[row + i] = ((xd[row + i] - mean) / Math.sqrt(variance + eps)) * w[i] + b[i];
  }
  return { dtype: 'F32', shape: x.shape, data: out };
}

test('clip skip in the graph: 0 and 1 give last_hidden_state, 2 the penultimate through the final norm', async (t) => {
  const clip = loadClip(fixture('tiny-sd', 'text_encoder'));
  const [weight, bias] = [clip.weights.get('final_layer_norm.weight'), clip.weights.get('final_layer_norm.bias')];
  const enc = await ClipTextEncoder.create(clip);
  clip.weights.close();
  const ids = textGolden.get('input_ids')!.data as BigInt64Array;
  for (const skip of [0, 1]) {
    const { conditioning } = await enc.encode(ids, 77, skip);
    close(t, `clip skip ${skip}`, conditioning, textGolden.get('last_hidden_state')!, 1e-5);
  }
  const penultimate = layerNorm64(textGolden.get('hidden_states.1')!, weight, bias, clip.textConfig!.layerNormEps);
  close(t, 'clip skip 2', (await enc.encode(ids, 77, 2)).conditioning, penultimate, 1e-5);
  await t.throwsAsync(enc.encode(ids, 77, 3), { message: "clip skip 3 is outside 0..2, the encoder's layers" });
});

test('CLIPModel (Safe-CLIP layout): text, vision and logits match transformers', async (t) => {
  const golden = readSafetensors(fixture('clip_golden.safetensors'));
  const clip = loadClip(fixture('clip'));
  t.is(clip.kind, 'CLIPModel');
  t.is(clip.projectionDim, 24);
  const text = await (await ClipTextEncoder.create(clip)).encode(golden.get('input_ids')!.data as BigInt64Array);
  close(t, 'text_last_hidden_state', text.lastHidden, golden.get('text_last_hidden_state')!);
  close(t, 'text_pooler_output', text.pooled, golden.get('text_pooler_output')!);
  close(t, 'text_embeds', text.textEmbeds!, golden.get('text_embeds')!);
  t.is(text.hiddenStates.length, 4);
  text.hiddenStates.forEach((h, i) => {
    close(t, `text_hidden_states.${i}`, h, golden.get(`text_hidden_states.${i}`)!);
  });
  const image = await (await ClipVisionEncoder.create(clip)).encode(golden.get('pixel_values') as F32Tensor);
  close(t, 'image_last_hidden_state', image.lastHidden, golden.get('image_last_hidden_state')!);
  close(t, 'image_pooler_output', image.pooled, golden.get('image_pooler_output')!);
  close(t, 'image_embeds', image.imageEmbeds!, golden.get('image_embeds')!);
  const logits = clipLogits(image.imageEmbeds!, text.textEmbeds!, logitScale(clip.weights));
  close(t, 'logits_per_image', logits, golden.get('logits_per_image')!);
  clip.weights.close();
});

test('a shorter sequence runs (positions and causal mask follow its length)', async (t) => {
  const clip = loadClip(fixture('tiny-sd', 'text_encoder'));
  const enc = await ClipTextEncoder.create(clip);
  const ids = textGolden.get('input_ids')!.data as BigInt64Array;
  const full = await enc.encode(ids.slice(0, 77));
  // Causal attention: the first 10 positions cannot see what follows, so truncating changes nothing there.
  const short = await enc.encode(ids.slice(0, 10), 10);
  t.deepEqual(short.lastHidden.shape, [1, 10, 32]);
  close(
    t,
    'first 10 positions',
    short.lastHidden,
    { dtype: 'F32', shape: [1, 10, 32], data: full.lastHidden.data.slice(0, 10 * 32) },
    1e-6,
  );
  await t.throwsAsync(enc.encode(new BigInt64Array(78), 78), { message: /at most 77/ });
  clip.weights.close();
});

test('the toy CLIP (float16 weights) loads and runs', async (t) => {
  const clip = loadClip(weightsPath('toy-clip'));
  t.is(clip.kind, 'CLIPModel');
  const text = await (await ClipTextEncoder.create(clip)).encode(new BigInt64Array(2 * 77).fill(49407n));
  t.deepEqual(text.lastHidden.shape, [2, 77, 64]);
  t.deepEqual(text.textEmbeds!.shape, [2, 64]);
  t.true(text.lastHidden.data.every(Number.isFinite));
  const image = await (await ClipVisionEncoder.create(clip)).encode({
    dtype: 'F32',
    shape: [1, 3, 64, 64],
    data: new Float32Array(3 * 64 * 64).fill(0.1),
  });
  t.deepEqual(image.imageEmbeds!.shape, [1, 64]);
  clip.weights.close();
});

const temps: string[] = [];
test.after.always(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

function tempCopy(dir: string, editConfig?: (c: Record<string, unknown>) => void): string {
  const out = mkdtempSync(join(tmpdir(), 'clip-test-'));
  temps.push(out);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  editConfig?.(config);
  writeFileSync(join(out, 'config.json'), JSON.stringify(config));
  copyFileSync(join(dir, 'model.safetensors'), join(out, 'model.safetensors'));
  return out;
}

test('a missing config key names the file and the key', (t) => {
  const dir = tempCopy(fixture('clip'), (c) => delete (c.text_config as Record<string, unknown>).num_attention_heads);
  t.throws(() => loadClip(dir), {
    message: `${join(dir, 'config.json')}#text_config: missing config key 'num_attention_heads'`,
  });
});

test('a weight of the wrong shape or a missing weight names the file and the key', (t) => {
  const cfg = readClipTextConfig(Config.read(fixture('tiny-sd', 'text_encoder', 'config.json')));
  const store = SafetensorsWeights.open([fixture('tiny-sd', 'text_encoder', 'model.safetensors')]);
  const map = new Map(store.keys().map((k) => [k, store.get(k)]));
  store.close();
  const fc1 = 'encoder.layers.1.mlp.fc1.weight';
  const misshapen = new Map(map);
  misshapen.set(fc1, { dtype: 'F32', shape: [64, 32], data: new Float32Array(64 * 32) });
  t.throws(() => buildClipTextGraph(new MemoryWeights(misshapen, 'bad.safetensors'), cfg), {
    message: `bad.safetensors: weight ${fc1} has shape [64,32] but the config implies [128,32]`,
  });
  const missing = new Map(map);
  missing.delete('final_layer_norm.bias');
  t.throws(() => buildClipTextGraph(new MemoryWeights(missing, 'bad.safetensors'), cfg), {
    message: 'bad.safetensors: missing weight final_layer_norm.bias (expected shape [32])',
  });
  t.throws(() => buildClipTextGraph(new MemoryWeights(map, 'bad.safetensors'), { ...cfg, layers: 1 }), {
    message: /^bad\.safetensors: 16 weight\(s\) not used by the CLIP text tower [^:]*: encoder\.layers\.1\./,
  });
});

test('a folder whose safetensors misses a weight fails when the graph is built, naming the file', async (t) => {
  const dir = tempCopy(fixture('text_encoder_v4_layout'));
  const tensors = readSafetensors(join(dir, 'model.safetensors'));
  tensors.delete('text_model.encoder.layers.0.self_attn.k_proj.bias');
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const clip = loadClip(dir);
  await t.throwsAsync(ClipTextEncoder.create(clip), {
    message:
      `${join(dir, 'model.safetensors')}: missing weight ` +
      `text_model.encoder.layers.0.self_attn.k_proj.bias (expected shape [32])`,
  });
  clip.weights.close();
});

test('CLIPTextModelWithProjection and CLIPVisionModelWithProjection folders load with their projections', async (t) => {
  const golden = readSafetensors(fixture('clip_golden.safetensors'));
  const asTower = (section: string, arch: string) =>
    tempCopy(fixture('clip'), (c) => {
      const tower = c[section] as Record<string, unknown>;
      for (const k of Object.keys(c)) delete c[k];
      Object.assign(c, tower, { architectures: [arch] });
    });
  const textClip = loadClip(asTower('text_config', 'CLIPTextModelWithProjection'));
  t.is(textClip.kind, 'CLIPTextModelWithProjection');
  t.is(textClip.projectionDim, 24);
  const text = await (await ClipTextEncoder.create(textClip)).encode(golden.get('input_ids')!.data as BigInt64Array);
  close(t, 'text_embeds', text.textEmbeds!, golden.get('text_embeds')!);
  const visionClip = loadClip(asTower('vision_config', 'CLIPVisionModelWithProjection'));
  t.is(visionClip.textConfig, undefined);
  await t.throwsAsync(ClipTextEncoder.create(visionClip), {
    message: /a CLIPVisionModelWithProjection has no text tower/,
  });
  const image = await (await ClipVisionEncoder.create(visionClip)).encode(golden.get('pixel_values') as F32Tensor);
  close(t, 'image_embeds', image.imageEmbeds!, golden.get('image_embeds')!);
  textClip.weights.close();
  visionClip.weights.close();
});

test('a config of another architecture is refused, naming the file', (t) => {
  const dir = tempCopy(fixture('clip'), (c) => (c.architectures = ['T5EncoderModel']));
  t.throws(() => loadClip(dir), {
    message:
      `${join(dir, 'config.json')}: architecture 'T5EncoderModel' is not one of CLIPModel, ` +
      `CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection`,
  });
});

test('with a current eos_token_id the pooled state is at the first position holding it', async (t) => {
  const dir = fixture('tiny-sd', 'text_encoder');
  const cfg = readClipTextConfig(Config.read(join(dir, 'config.json')));
  const store = SafetensorsWeights.open([join(dir, 'model.safetensors')]);
  const ids = textGolden.get('input_ids')!.data as BigInt64Array;
  // Declare the prompt's first word the end token: the legacy rule (largest id) would pool elsewhere.
  const eos = ids[1];
  const session = await createSession(serializeModel(buildClipTextGraph(store, { ...cfg, eosTokenId: Number(eos) })));
  const out = await run(session, { input_ids: { dtype: 'I64', shape: [1, 77], data: ids.slice(0, 77) } }, [
    'pooler_output',
  ]);
  const d = cfg.hiddenSize;
  const want = (textGolden.get('last_hidden_state')!.data as Float32Array).slice(
    ids.indexOf(eos) * d,
    (ids.indexOf(eos) + 1) * d,
  );
  close(t, 'pooler_output', out.pooler_output, { dtype: 'F32', shape: [1, d], data: want });
  store.close();
});
