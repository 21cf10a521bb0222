import { performance } from 'node:perf_hooks';
import { GraphBuilder } from '../onnx/graph.js';
import { serializeModel } from '../onnx/serialize.js';
import { createSession, run } from '../onnx/session.js';
import { Scope } from '../models/scope.js';
import { Embedding, LayerNorm, Linear, activation, attention } from '../models/nn.js';
import { MemoryWeights } from '../core/weights.js';
import { f32, numel, type F32Tensor, type Tensor } from '../core/tensor.js';
import { buildGradients, exposeGradients, promoteToInputs } from '../autodiff/autodiff.js';

/**
 * Cost of a training step relative to a forward pass, on a small CLIP-like text tower:
 *   node --import tsx src/finetune/bench.ts [layers] [hidden] [seq] [batch] [intra-op threads]
 */
const [layers, hidden, seq, batch, threadsArg] = process.argv.slice(2, 7).map(Number);
const threads = threadsArg || undefined;
const L = layers || 4;
const D = hidden || 64;
const S = seq || 77;
const B = batch || 32;
const heads = 4;
const vocab = 1000;

function randomTensor(shape: number[], seed: number): F32Tensor {
  let s = seed;
  const data = Float32Array.from({ length: numel(shape) }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (s / 2147483648 - 0.5) * 0.2;
  });
  return f32(data, shape);
}

function weights(): MemoryWeights {
  const shapes: Record<string, number[]> = {
    'token_embedding.weight': [vocab, D],
    'position_embedding.weight': [S, D],
    'final_layer_norm.weight': [D],
    'final_layer_norm.bias': [D],
  };
  for (let i = 0; i < L; i++) {
    const p = `layers.${i}.`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj'])
      Object.assign(shapes, { [`${p}self_attn.${n}.weight`]: [D, D], [`${p}self_attn.${n}.bias`]: [D] });
    Object.assign(shapes, {
      [`${p}mlp.fc1.weight`]: [4 * D, D],
      [`${p}mlp.fc1.bias`]: [4 * D],
      [`${p}mlp.fc2.weight`]: [D, 4 * D],
      [`${p}mlp.fc2.bias`]: [D],
    });
    for (const n of ['layer_norm1', 'layer_norm2'])
      Object.assign(shapes, { [`${p}${n}.weight`]: [D], [`${p}${n}.bias`]: [D] });
  }
  return new MemoryWeights(new Map(Object.entries(shapes).map(([k, s], i) => [k, randomTensor(s, i + 1)])));
}

/** The text tower with a mean-square loss; with `train`, every weight is an input and its gradient an output. */
function build(w: MemoryWeights, train: boolean): { g: GraphBuilder; params: Map<string, F32Tensor> } {
  const g = new GraphBuilder();
  const root = Scope.root(g, w);
  const ids = g.input('input_ids', 'int64', ['batch', S]);
  let x = g.add(
    new Embedding(root.child('token_embedding'), vocab, D).forward(ids),
    new Embedding(root.child('position_embedding'), S, D).forward(g.constI64([...Array(S).keys()])),
  );
  const mask = g.op('Trilu', [g.constF32(new Float32Array(S * S).fill(-1e4), [S, S]), g.constI64([1], [])], {
    upper: 1,
  });
  for (let i = 0; i < L; i++) {
    const s = root.child('layers').child(i);
    const a = s.child('self_attn');
    const lin = (m: Scope, i: number, o: number) => new Linear(m, i, o);
    const h = new LayerNorm(s.child('layer_norm1'), D, 1e-5).forward(x);
    const att = attention(
      a,
      lin(a.child('q_proj'), D, D).forward(h),
      lin(a.child('k_proj'), D, D).forward(h),
      lin(a.child('v_proj'), D, D).forward(h),
      heads,
      D / heads,
      mask,
    );
    x = g.add(x, lin(a.child('out_proj'), D, D).forward(att));
    const m = s.child('mlp');
    const hid = activation(
      m,
      'quick_gelu',
      lin(m.child('fc1'), D, 4 * D).forward(new LayerNorm(s.child('layer_norm2'), D, 1e-5).forward(x)),
    );
    x = g.add(x, lin(m.child('fc2'), 4 * D, D).forward(hid));
  }
  const y = new LayerNorm(root.child('final_layer_norm'), D, 1e-5).forward(x);
  const loss = g.op('ReduceMean', [g.mul(y, y)], { keepdims: 0 });
  g.output(loss, 'loss', 'float32', []);
  const names = [...g.initializers.keys()].filter((k) => w.has(k));
  const params = promoteToInputs(g, names);
  if (train) exposeGradients(g, buildGradients(g, loss, names), new Map([...params].map(([k, v]) => [k, v.shape])));
  return { g, params };
}

/** Median wall time of each model's runs, interleaved so that load from other processes hits both alike. */
async function timeRuns(models: Uint8Array[], feeds: Record<string, Tensor>, runs: number): Promise<number[]> {
  const sessions = await Promise.all(models.map((m) => createSession(m, { intraOpThreads: threads })));
  for (const s of sessions) for (let i = 0; i < 3; i++) await run(s, feeds);
  const times = sessions.map(() => [] as number[]);
  for (let i = 0; i < runs; i++) {
    for (const [k, s] of sessions.entries()) {
      const t0 = performance.now();
      await run(s, feeds);
      times[k].push(performance.now() - t0);
    }
  }
  return times.map((t) => t.sort((a, b) => a - b)[Math.floor(runs / 2)]);
}

const w = weights();
const fwd = build(w, false);
const train = build(w, true);
const feeds: Record<string, Tensor> = {
  input_ids: {
    dtype: 'I64',
    shape: [B, S],
    data: BigInt64Array.from({ length: B * S }, (_, i) => BigInt((i * 7919) % vocab)),
  },
};
for (const [k, v] of fwd.params) feeds[k] = v;
const runs = 40;
const [tf, tt] = await timeRuns([serializeModel(fwd.g), serializeModel(train.g)], feeds, runs);
console.log(
  `layers ${L} hidden ${D} seq ${S} batch ${B}: forward ${tf.toFixed(1)} ms, forward+backward ${tt.toFixed(1)} ` +
    `ms, ratio ${(tt / tf).toFixed(2)} (median of ${runs}; nodes ${fwd.g.nodes.length} -> ` +
    `${train.g.nodes.length})`,
);
