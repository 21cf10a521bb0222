import { attention, GroupNorm } from '../models/nn.js';
import type { AttentionKernel } from '../models/scope.js';
import { Scope } from '../models/scope.js';
import { MemoryWeights } from '../core/weights.js';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { GraphBuilder } from '../onnx/graph.js';
import { modelProto } from '../onnx/serialize.js';
import { run } from '../onnx/session.js';
import { timeMedian } from './measure.js';
import { randomTensor, timeGraph } from './reference.js';
import type { BenchRow } from './measure.js';

/** ms of one attention over [1, tokens, heads*headDim] queries and `keys` keys/values, lowered as `kernel`. */
async function attentionMs(
  kernel: AttentionKernel,
  tokens: number,
  keys: number,
  heads: number,
  headDim: number,
  reps: number,
): Promise<number> {
  const g = new GraphBuilder();
  const D = heads * headDim;
  const q = g.input('q', 'float32', [1, tokens, D]);
  const k = g.input('k', 'float32', [1, keys, D]);
  const v = g.input('v', 'float32', [1, keys, D]);
  const s = Scope.root(g, new MemoryWeights(new Map()), 'attn');
  g.output(attention(s, q, k, v, heads, headDim, undefined, kernel), 'y', 'float32', [1, tokens, D]);
  return timeGraph(
    g,
    { q: randomTensor([1, tokens, D], 1), k: randomTensor([1, keys, D], 2), v: randomTensor([1, keys, D], 3) },
    reps,
  );
}

/**
 * ms of GroupNorm(32) over [1, c, hw, hw], lowered as Reshape+InstanceNormalization or as opset-21 GroupNormalization.
 */
async function groupNormMs(c: number, hw: number, reps: number): Promise<number> {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [1, c, hw, hw]);
  const weights = new MemoryWeights(
    new Map([
      ['norm.weight', randomTensor([c], 4)],
      ['norm.bias', randomTensor([c], 5)],
    ]),
  );
  const norm = new GroupNorm(Scope.root(g, weights, 'norm'), 32, c, 1e-5);
  g.output(norm.forward(x), 'y', 'float32', [1, c, hw, hw]);
  return timeGraph(g, { x: randomTensor([1, c, hw, hw]) }, reps);
}

/**
 * The same GroupNorm as opset-21 GroupNormalization (per-channel scale and bias), which ORT expands into a function
 * body on CPU.
 */
async function groupNormalizationMs(c: number, hw: number, reps: number): Promise<number> {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [1, c, hw, hw]);
  const scale = g.initializer('scale', randomTensor([c], 4));
  const bias = g.initializer('bias', randomTensor([c], 5));
  g.output(g.op('GroupNormalization', [x, scale, bias], { num_groups: 32, epsilon: 1e-5 }), 'y', 'float32', [
    1,
    c,
    hw,
    hw,
  ]);
  const proto = modelProto(g);
  proto.opsetImport = [{ domain: '', version: 21 }];
  proto.irVersion = 10;
  const session = await ort.InferenceSession.create(onnxProto.onnx.ModelProto.encode(proto).finish(), {
    graphOptimizationLevel: 'all',
  });
  try {
    return await timeMedian(() => run(session, { x: randomTensor([1, c, hw, hw]) }), reps);
  } finally {
    await session.release();
  }
}

/** The speed choices of the issue, each measured both ways on SD 1.5's largest shapes (512 px). */
export async function kernelSection(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const cases: Array<[string, number, number, number, number]> = [
    ['self-attention 4096 tok, 8x40', 4096, 4096, 8, 40],
    ['cross-attention 4096 tok x 77 keys, 8x40', 4096, 77, 8, 40],
    ['VAE self-attention 4096 tok, 1x512', 4096, 4096, 1, 512],
  ];
  for (const [label, tokens, keys, heads, headDim] of cases) {
    const plain = await attentionMs('plain', tokens, keys, heads, headDim, 3);
    const fused = await attentionMs('fused', tokens, keys, heads, headDim, 3);
    rows.push({ section: 'kernels', name: `${label}: MatMul/Softmax`, value: plain, unit: 'ms' });
    rows.push({
      section: 'kernels',
      name: `${label}: MultiHeadAttention`,
      value: fused,
      unit: 'ms',
      note: `${(plain / fused).toFixed(2)}x the plain path's speed`,
    });
  }
  for (const [c, hw] of [
    [320, 64],
    [1280, 8],
  ]) {
    const lowered = await groupNormMs(c, hw, 5);
    const op21 = await groupNormalizationMs(c, hw, 5);
    rows.push({
      section: 'kernels',
      name: `GroupNorm ${c} ch ${hw}x${hw}: Reshape+InstanceNormalization`,
      value: lowered,
      unit: 'ms',
    });
    rows.push({
      section: 'kernels',
      name: `GroupNorm ${c} ch ${hw}x${hw}: GroupNormalization (opset 21)`,
      value: op21,
      unit: 'ms',
      note: `${(lowered / op21).toFixed(2)}x the lowering's speed`,
    });
  }
  return rows;
}
