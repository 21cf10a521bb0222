import test from 'ava';
import { readFileSync } from 'node:fs';
import { safeClipLoss, TERMS } from '../src/finetune/losses.js';
import { loraKey, mergeLora } from '../src/finetune/lora.js';
import { buildTrainGraph, IN, lossOutput, TOTAL } from '../src/finetune/train-graph.js';
import { loadClip } from '../src/models/clip-loader.js';
import { readSafetensors } from '../src/models/safetensors.js';
import type { F32Tensor, Tensor } from '../src/models/tensor.js';
import { GraphBuilder } from '../src/onnx/graph.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';
import { fixture } from './fixtures.js';

const golden = readSafetensors(fixture('safeclip_golden.safetensors'));
const spec = JSON.parse(readFileSync(fixture('safeclip_golden.json'), 'utf8'));
const LOSS_TOL = 1e-4;

function want(key: string): F32Tensor {
  const t = golden.get(key);
  if (!t) throw new Error(`golden has no ${key}`);
  return t as F32Tensor;
}

function maxAbs(a: Tensor, b: Tensor): number {
  if (a.shape.join() !== b.shape.join()) throw new Error(`shape [${a.shape}] vs [${b.shape}]`);
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs((a.data[i] as number) - (b.data[i] as number)));
  return m;
}

test('loss graph on the golden embeddings gives the 8 terms and the total', async (t) => {
  const g = new GraphBuilder();
  const names = ['S', 'U', 'V', 'G', 'Sref', 'Vref'] as const;
  for (const n of names) g.input(n, 'float32', ['batch', 24]);
  const loss = safeClipLoss(g, { S: 'S', U: 'U', V: 'V', G: 'G', Sref: 'Sref', Vref: 'Vref' });
  for (const term of TERMS) g.output(loss.terms[term] as string, term, 'float32', []);
  g.output(loss.total, 'total', 'float32', []);
  const session = await createSession(serializeModel(g));
  const out = await run(session, Object.fromEntries(names.map((n) => [n, want(`embeds.${n}`)])));
  let worst = 0;
  for (const term of TERMS) {
    const err = Math.abs(out[term].data[0] - spec.loss_values[term]);
    worst = Math.max(worst, err);
    t.true(err < LOSS_TOL, `${term}: ${out[term].data[0]} vs ${spec.loss_values[term]}`);
  }
  const totalErr = Math.abs(out.total.data[0] - spec.total_value);
  t.log(`loss terms max abs error ${worst.toExponential(2)}, total ${totalErr.toExponential(2)}`);
  t.true(totalErr < LOSS_TOL);
});

const clipDir = fixture('clip');

function goldenBatch(): Record<string, Tensor> {
  return {
    [IN.safeIds]: want('safe_input_ids') as Tensor,
    [IN.nsfwIds]: want('nsfw_input_ids') as Tensor,
    [IN.safePixels]: want('safe_pixel_values'),
    [IN.nsfwPixels]: want('nsfw_pixel_values'),
    [IN.Sref]: want('embeds.Sref'),
    [IN.Vref]: want('embeds.Vref'),
  };
}

/** golden LoRA parameters under this project's (peft adapter file) names. */
function goldenLora(prefix: 'lora.param.' | 'lora.grad.'): Map<string, F32Tensor> {
  const out = new Map<string, F32Tensor>();
  for (const [k, v] of golden) if (k.startsWith(prefix)) out.set(k.slice(prefix.length).replace('.default.weight', '.weight'), v as F32Tensor);
  return out;
}

test('training graph forward: full mode reproduces the golden embeddings and losses', async (t) => {
  const clip = loadClip(clipDir);
  const tg = buildTrainGraph(clip, { mode: 'full' });
  const session = await createSession(serializeModel(tg.g));
  const feeds: Record<string, Tensor> = { ...goldenBatch(), ...Object.fromEntries(tg.initial) };
  const out = await run(session, feeds);
  for (const e of ['S', 'U', 'V', 'G']) t.true(maxAbs(out[`embeds.${e}`], want(`embeds.${e}`)) < LOSS_TOL, e);
  for (const term of TERMS) t.true(Math.abs(out[lossOutput(term)].data[0] - spec.loss_values[term]) < LOSS_TOL, term);
  t.true(Math.abs(out[TOTAL].data[0] - spec.total_value) < LOSS_TOL);
  clip.weights.close();
});

test('training graph forward with the golden LoRA parameters gives the LoRA embeddings and total', async (t) => {
  const clip = loadClip(clipDir);
  const lora = { rank: spec.lora.r, alpha: spec.lora.lora_alpha, targets: spec.lora.target_modules };
  const tg = buildTrainGraph(clip, { mode: 'full', lora });
  const params = goldenLora('lora.param.');
  t.deepEqual(tg.params.map((p) => p.name).sort(), [...params.keys()].sort());
  const session = await createSession(serializeModel(tg.g));
  const out = await run(session, { ...goldenBatch(), ...Object.fromEntries(params) });
  for (const e of ['S', 'U', 'V', 'G']) t.true(maxAbs(out[`embeds.${e}`], want(`lora.embeds.${e}`)) < LOSS_TOL, e);
  const err = Math.abs(out[TOTAL].data[0] - want('lora.loss.total').data[0]);
  t.log(`LoRA total abs error ${err.toExponential(2)}`);
  t.true(err < LOSS_TOL);
  for (const key of ['text_model.encoder.layers.0.self_attn.k_proj.weight', 'text_model.encoder.layers.1.mlp.fc1.weight', 'vision_model.embeddings.patch_embedding.weight']) {
    const module = key.slice(0, -'.weight'.length);
    const merged = mergeLora(clip.weights.get(key), params.get(loraKey(module, 'A'))!, params.get(loraKey(module, 'B'))!, lora);
    const mErr = maxAbs(merged, want(`lora.merged.${key}`));
    t.log(`merged ${key}: max abs error ${mErr.toExponential(2)}`);
    t.true(mErr < 1e-5);
  }
  clip.weights.close();
});
