import test, { type ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { safeClipLoss, termWeight, TERMS } from '../src/finetune/losses.js';
import { loraKey, mergeLora } from '../src/finetune/lora.js';
import { Adam } from '../src/finetune/adam.js';
import { createTrainer, trainStep, values } from '../src/finetune/train.js';
import { buildTrainGraph, IN, lossOutput, TOTAL } from '../src/finetune/train-graph.js';
import { ClipTextEncoder, loadClip } from '../src/models/clip-loader.js';
import { readSafetensors } from '../src/core/safetensors.js';
import type { F32Tensor, Tensor } from '../src/core/tensor.js';
import { GraphBuilder } from '../src/onnx/graph.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';
import { fixture } from './fixtures.js';
import { maxAbsError, relError } from './helpers/compare.js';

const golden = readSafetensors(fixture('safeclip_golden.safetensors'));
const spec = JSON.parse(readFileSync(fixture('safeclip_golden.json'), 'utf8'));
// Tolerances near 10x the largest error measured against the golden (each test logs its own).
/** Losses and embeddings, absolute: measured 1.9e-6. */
const LOSS_TOL = 2e-5;
/** Parameters after one Adam step (lr 1e-3), absolute: measured 1.5e-8. */
const PARAM_TOL = 2e-7;

function want(key: string): F32Tensor {
  const t = golden.get(key);
  if (!t) throw new Error(`golden has no ${key}`);
  return t as F32Tensor;
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
  for (const [k, v] of golden)
    if (k.startsWith(prefix)) out.set(k.slice(prefix.length).replace('.default.weight', '.weight'), v as F32Tensor);
  return out;
}

test('training graph forward: full mode reproduces the golden embeddings and losses', async (t) => {
  const clip = loadClip(clipDir);
  const tg = buildTrainGraph(clip, { mode: 'full' });
  const session = await createSession(serializeModel(tg.g));
  const feeds: Record<string, Tensor> = { ...goldenBatch(), ...Object.fromEntries(tg.initial) };
  const out = await run(session, feeds);
  const embedErr = Math.max(...['S', 'U', 'V', 'G'].map((e) => maxAbsError(out[`embeds.${e}`], want(`embeds.${e}`))));
  const lossErr = Math.max(
    ...TERMS.map((term) => Math.abs(out[lossOutput(term)].data[0] - spec.loss_values[term])),
    Math.abs(out[TOTAL].data[0] - spec.total_value),
  );
  t.log(`embeddings max abs error ${embedErr.toExponential(2)}, losses ${lossErr.toExponential(2)}`);
  t.true(embedErr < LOSS_TOL);
  t.true(lossErr < LOSS_TOL);
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
  const embedErr = Math.max(
    ...['S', 'U', 'V', 'G'].map((e) => maxAbsError(out[`embeds.${e}`], want(`lora.embeds.${e}`))),
  );
  const err = Math.abs(out[TOTAL].data[0] - want('lora.loss.total').data[0]);
  t.log(`LoRA embeddings max abs error ${embedErr.toExponential(2)}, total ${err.toExponential(2)}`);
  t.true(embedErr < LOSS_TOL);
  t.true(err < LOSS_TOL);
  for (const key of [
    'text_model.encoder.layers.0.self_attn.k_proj.weight',
    'text_model.encoder.layers.1.mlp.fc1.weight',
    'vision_model.embeddings.patch_embedding.weight',
  ]) {
    const module = key.slice(0, -'.weight'.length);
    const merged = mergeLora(
      clip.weights.get(key),
      params.get(loraKey(module, 'A'))!,
      params.get(loraKey(module, 'B'))!,
      lora,
    );
    const mErr = maxAbsError(merged, want(`lora.merged.${key}`));
    t.log(`merged ${key}: max abs error ${mErr.toExponential(2)}`);
    t.true(mErr < 3e-7);
  }
  clip.weights.close();
});

/** Gradients, relative to the tensor's largest magnitude: measured 7.8e-6 (LoRA). */
const GRAD_REL_TOL = 8e-5;

const isText = (key: string) => key.startsWith('text_model.') || key.startsWith('text_projection.');

/**
 * One step on the golden batch: the gradients and the parameters after one Adam step (lr 1e-3) of the golden's
 * chosen parameters that `mode` trains. The text parameters' gradients are the same in both modes: the four
 * image terms do not reach the text tower, and every term keeps its weight.
 */
async function checkStep(t: ExecutionContext, mode: 'text' | 'full'): Promise<void> {
  const clip = loadClip(clipDir);
  const trainer = await createTrainer(clip, { mode });
  const params = new Map(trainer.graph.initial);
  const batch = goldenBatch();
  const res = await trainStep(trainer, batch, params);
  const trained = (key: string) => mode === 'full' || isText(key);
  let worstGrad = 0;
  const dense = (name: string): F32Tensor => {
    const g = res.grads.get(name)!;
    if ('rows' in g) throw new Error(`${name}: a row gradient where a dense one was expected`);
    return g;
  };
  for (const [key, ref] of golden) {
    if (!key.startsWith('grad.') || !trained(key.slice('grad.'.length))) continue;
    const name = key.slice('grad.'.length);
    const err = relError(dense(name), ref);
    worstGrad = Math.max(worstGrad, err);
    t.true(err < GRAD_REL_TOL, `${name}: relative error ${err}`);
  }
  // The token embedding's gradient comes as the batch's rows (repeated tokens summed here); the golden records it
  // for the rows the batch uses.
  const rows = golden.get('grad_rows.token_ids')!.data as BigInt64Array;
  const sparse = res.grads.get('text_model.embeddings.token_embedding.weight')!;
  if (!('rows' in sparse)) throw new Error('the token embedding gradient should come as rows');
  const d = sparse.width;
  const summed = new Map<bigint, Float32Array>();
  sparse.rows.forEach((r, i) => {
    const acc = summed.get(r) ?? new Float32Array(d);
    for (let j = 0; j < d; j++) acc[j] += sparse.values[i * d + j];
    summed.set(r, acc);
  });
  t.deepEqual(
    [...summed.keys()].sort((a, b) => Number(a - b)),
    [...rows].sort((a, b) => Number(a - b)),
  );
  const picked = new Float32Array(rows.length * d);
  rows.forEach((r, i) => {
    picked.set(summed.get(r)!, i * d);
  });
  const rowsErr = relError(
    { dtype: 'F32', shape: [rows.length, d], data: picked },
    want('grad_rows.text_model.embeddings.token_embedding.weight'),
  );
  t.true(rowsErr < GRAD_REL_TOL, `token embedding rows: ${rowsErr}`);

  new Adam({ lr: 1e-3 }).update(values(params), values(res.grads));
  let worstParam = 0;
  for (const [key, ref] of golden) {
    const name = key.slice('after_step.'.length);
    if (!key.startsWith('after_step.') || !trained(name)) continue;
    const err = maxAbsError(params.get(name)!, ref);
    worstParam = Math.max(worstParam, err);
    t.true(err < PARAM_TOL, `${key}: ${err}`);
  }
  t.log(
    `${mode} mode: gradients max relative error ${Math.max(worstGrad, rowsErr).toExponential(2)}, parameters ` +
      `after one Adam step max abs error ${worstParam.toExponential(2)}`,
  );
  clip.weights.close();
}

test('one training step, text mode: gradients of the text parameters and the parameters after one Adam step', (t) =>
  checkStep(t, 'text'));

/** LoRA gradients on the golden batch; in text mode, those of the text tower's adapters (see checkStep). */
async function checkLoraStep(t: ExecutionContext, mode: 'text' | 'full'): Promise<void> {
  const clip = loadClip(clipDir);
  const lora = { rank: spec.lora.r, alpha: spec.lora.lora_alpha, targets: spec.lora.target_modules };
  const trainer = await createTrainer(clip, { mode, lora });
  const trained = (key: string) => mode === 'full' || isText(key.slice('base_model.model.'.length));
  const params = new Map([...goldenLora('lora.param.')].filter(([k]) => trained(k)));
  const res = await trainStep(trainer, goldenBatch(), params);
  let totalErr = 0;
  if (mode === 'full') {
    totalErr = Math.abs(res.losses.total - want('lora.loss.total').data[0]);
    t.true(totalErr < LOSS_TOL);
  }
  let worst = 0;
  const refs = new Map([...goldenLora('lora.grad.')].filter(([k]) => trained(k)));
  t.is(res.grads.size, refs.size);
  for (const [name, ref] of refs) {
    const err = relError(res.grads.get(name) as F32Tensor, ref);
    worst = Math.max(worst, err);
    t.true(err < GRAD_REL_TOL, `${name}: relative error ${err}`);
  }
  t.log(
    `${mode} mode LoRA: total abs error ${totalErr.toExponential(2)}, gradients max relative error ` +
      `${worst.toExponential(2)}`,
  );
  clip.weights.close();
}

test('one training step with LoRA, text mode: the gradients of the text adapters', (t) => checkLoraStep(t, 'text'));

// The vision tower's class-token Expand takes its shape at run time, and the autodiff engine's static shape
// inference does not follow it yet; these pass once it does (ava then reports them as passing 'failing' tests).
test('one training step, full mode: gradients of the chosen parameters and the parameters after one Adam step', (t) =>
  checkStep(t, 'full'));
test('one training step with LoRA, full mode: the gradients of every adapter', (t) => checkLoraStep(t, 'full'));

// The term is its weight times the mean squared distance of the token sequences to the reference's safe one.
test('the optional hidden-state term', async (t) => {
  const clip = loadClip(clipDir);
  const reference = await ClipTextEncoder.create(clip);
  const safeIds = want('safe_input_ids') as Tensor;
  const safeRef = await reference.encode(safeIds.data as BigInt64Array, 77);
  const nsfwRef = await reference.encode((want('nsfw_input_ids') as Tensor).data as BigInt64Array, 77);
  let mse = 0;
  nsfwRef.lastHidden.data.forEach((v, i) => {
    mse += (v - safeRef.lastHidden.data[i]) ** 2;
  });
  mse /= nsfwRef.lastHidden.data.length;

  const weight = 0.7;
  const tg = buildTrainGraph(clip, { mode: 'text', hiddenWeight: weight });
  const session = await createSession(serializeModel(tg.g));
  const batch = goldenBatch();
  const out = await run(session, {
    [IN.safeIds]: batch[IN.safeIds],
    [IN.nsfwIds]: batch[IN.nsfwIds],
    [IN.Sref]: batch[IN.Sref],
    [IN.Vref]: batch[IN.Vref],
    [IN.SrefHidden]: safeRef.lastHidden,
    ...Object.fromEntries(tg.initial),
  });
  const hiddenErr = Math.abs(out[lossOutput('U_Sref_hidden')].data[0] - mse) / Math.max(1, mse);
  const paper = ['S_Sref_cos', 'U_Sref_cos', 'S_Vref_nce', 'U_Vref_nce'] as const;
  const paperTotal = paper.reduce((s, term) => s + termWeight(term) * spec.loss_values[term], 0);
  const totalErr = Math.abs(
    out[TOTAL].data[0] - paperTotal - weight * (mse + out[lossOutput('S_Sref_hidden')].data[0]),
  );
  t.log(
    `hidden term relative error ${hiddenErr.toExponential(2)}, S term ` +
      `${out[lossOutput('S_Sref_hidden')].data[0].toExponential(2)}, total ${totalErr.toExponential(2)}`,
  );
  t.true(hiddenErr < 5e-8);
  t.true(out[lossOutput('S_Sref_hidden')].data[0] < 1e-9);
  t.true(totalErr < LOSS_TOL);
  clip.weights.close();
});
