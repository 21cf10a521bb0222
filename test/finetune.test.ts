import test from 'ava';
import { readFileSync } from 'node:fs';
import { safeClipLoss, TERMS } from '../src/finetune/losses.js';
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
