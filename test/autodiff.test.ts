import test, { type ExecutionContext } from 'ava';
import { GraphBuilder, type AttrValue, type Dim } from '../src/onnx/graph.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { createSession, run, runTensors } from '../src/onnx/session.js';
import { f32, numel, type F32Tensor, type Tensor } from '../src/core/tensor.js';
import { Scope } from '../src/models/scope.js';
import { LayerNorm, Linear, activation, attention } from '../src/models/nn.js';
import { MemoryWeights } from '../src/core/weights.js';
import { interpret } from '../src/onnx/interpret.js';
import { buildGradients, exposeGradients, promoteToInputs } from '../src/autodiff/autodiff.js';
import { rowChunks } from '../src/autodiff/grad-rules.js';

/** Deterministic uniform numbers (mulberry32), so every run checks the same points. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function rand(shape: number[], seed: number, lo = -1, hi = 1): F32Tensor {
  const r = rng(seed);
  return f32(
    Float32Array.from({ length: numel(shape) }, () => lo + (hi - lo) * r()),
    shape,
  );
}

interface Check {
  /** Float inputs (differentiated) and their values. */
  inputs: Record<string, F32Tensor>;
  /**
   * Declared dims of the inputs, e.g. symbolic ones to force run-time broadcast reduction; default: the values' shapes.
   */
  dims?: Record<string, Dim[]>;
  /** Builds the function under test from the input names; returns the value whose weighted sum is the loss. */
  build: (g: GraphBuilder, x: Record<string, string>) => string;
  /** The result is used as the loss directly (it must be a scalar). */
  scalarLoss?: boolean;
  step?: number;
  tol?: number;
  /** Check at most this many elements of each input by finite differences. */
  sample?: number;
  /** Initializers the build registers (module weights) to promote to inputs and differentiate too. */
  promote?: string[];
}

/**
 * Finite-difference check: loss = sum(f(x) * R) for a fixed random R; the autodiff gradients must match central
 * differences of the same float32 graph elementwise within tol relative to the largest gradient.
 */
async function gradcheck(t: ExecutionContext, c: Check): Promise<void> {
  const feeds: Record<string, F32Tensor> = { ...c.inputs };
  const names = [...Object.keys(c.inputs), ...(c.promote ?? [])];
  const graph = (withGrads: boolean, weightShape?: number[]) => {
    const g = new GraphBuilder();
    const x: Record<string, string> = {};
    for (const n of Object.keys(c.inputs)) x[n] = g.input(n, 'float32', c.dims?.[n] ?? c.inputs[n].shape);
    const y = c.build(g, x);
    const params = promoteToInputs(g, c.promote ?? []);
    for (const [n, v] of params) feeds[n] = v;
    if (!weightShape) {
      g.output(
        y,
        'y',
        'float32',
        (interpret(g).shapes.get(y) ?? []).map((_, i) => `d${i}`),
      );
      return g;
    }
    const loss = c.scalarLoss
      ? y
      : g.op('ReduceSum', [g.mul(y, g.constant(rand(weightShape, 99), 'R'))], { keepdims: 0 });
    g.output(loss, 'loss', 'float32', []);
    if (withGrads) exposeGradients(g, buildGradients(g, loss, names), new Map(names.map((n) => [n, feeds[n].shape])));
    return g;
  };
  const probe = await createSession(serializeModel(graph(false)));
  const yShape = (await run(probe, feeds)).y.shape;
  const fwd = await createSession(serializeModel(graph(false, yShape)));
  const bwd = await createSession(serializeModel(graph(true, yShape)));
  const res = await run(bwd, feeds);
  const lossAt = async (feeds: Record<string, F32Tensor>) => (await run(fwd, feeds)).loss.data[0];
  const h = c.step ?? 1e-2;
  const tol = c.tol ?? 1e-2;
  let worst = 0;
  for (const n of names) {
    const ad = res[`grad:${n}`];
    t.deepEqual(ad.shape, feeds[n].shape, `gradient of ${n} has the input's shape`);
    const base = feeds[n].data;
    const r = rng(7);
    const count = Math.min(base.length, c.sample ?? base.length);
    const picks =
      count === base.length ? [...base.keys()] : Array.from({ length: count }, () => Math.floor(r() * base.length));
    const fd: number[] = [];
    for (const i of picks) {
      const at = async (delta: number) => {
        const data = Float32Array.from(base);
        data[i] += delta;
        return lossAt({ ...feeds, [n]: f32(data, feeds[n].shape) });
      };
      fd.push(((await at(h)) - (await at(-h))) / (2 * h));
    }
    // The floor keeps gradients that are exactly zero (a key bias under softmax) from turning f32 noise into error.
    const scale = Math.max(1e-2, ...fd.map(Math.abs), ...picks.map((i) => Math.abs(ad.data[i])));
    const err = Math.max(...picks.map((i, k) => Math.abs(ad.data[i] - fd[k]))) / scale;
    worst = Math.max(worst, err);
    t.true(err < tol, `d/d${n}: max error ${err.toExponential(2)} relative to ${scale.toExponential(2)}`);
  }
  t.log(`max relative error ${worst.toExponential(2)}`);
}

const op =
  (type: string, attrs: Record<string, AttrValue> = {}) =>
  (g: GraphBuilder, inputs: string[]) =>
    g.op(type, inputs, attrs);

// Elementwise binary ops, same shape and broadcast (static and run-time reduction axes).
const binaries: [string, number, number][] = [
  ['Add', -1, 1],
  ['Sub', -1, 1],
  ['Mul', -1, 1],
  ['Div', 0.5, 1.5],
];
for (const [type, lo, hi] of binaries) {
  test(`${type}: same shape`, (t) =>
    gradcheck(t, {
      inputs: { a: rand([2, 3], 1), b: rand([2, 3], 2, lo, hi) },
      build: (g, x) => op(type)(g, [x.a, x.b]),
    }));
  test(`${type}: broadcast both ways`, (t) =>
    gradcheck(t, {
      inputs: { a: rand([2, 1, 4], 3), b: rand([3, 1], 4, lo, hi) },
      build: (g, x) => op(type)(g, [x.a, x.b]),
    }));
  test(`${type}: broadcast with symbolic dims (run-time axes)`, (t) =>
    gradcheck(t, {
      inputs: { a: rand([2, 3, 4], 5), b: rand([4], 6, lo, hi) },
      dims: { a: ['n', 's', 4], b: ['d'] },
      build: (g, x) => op(type)(g, [x.a, x.b]),
    }));
}

test('Pow with a constant exponent, broadcast', (t) =>
  gradcheck(t, {
    inputs: { x: rand([3, 4], 7, 0.5, 1.5) },
    build: (g, x) => g.op('Pow', [x.x, g.constF32([3, 0.5, 2, -1], [4])]),
  }));

test('Where with a constant mask', (t) =>
  gradcheck(t, {
    inputs: { a: rand([3, 4], 8), b: rand([4], 9) },
    build: (g, x) =>
      g.op('Where', [
        g.constant({ dtype: 'BOOL', shape: [3, 4], data: Uint8Array.from([1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0]) }),
        x.a,
        x.b,
      ]),
  }));

const unaries: [string, number, number][] = [
  ['Sigmoid', -2, 2],
  ['Tanh', -2, 2],
  ['Erf', -2, 2],
  ['Exp', -1, 1],
  ['Log', 0.5, 2],
  ['Sqrt', 0.5, 2],
  ['Neg', -1, 1],
  ['Reciprocal', 0.5, 2],
  ['Identity', -1, 1],
  ['Relu', 0.1, 1],
];
for (const [type, lo, hi] of unaries) {
  test(`${type}`, (t) => gradcheck(t, { inputs: { x: rand([3, 5], 10, lo, hi) }, build: (g, x) => g.op(type, [x.x]) }));
}
test('QuickGelu (com.microsoft), the CLIP activation', (t) =>
  gradcheck(t, {
    inputs: { x: rand([3, 5], 12, -3, 3) },
    build: (g, x) => g.op('QuickGelu', [x.x], { alpha: 1.702 }, { domain: 'com.microsoft' }),
  }));
test('Relu passes no gradient below zero', (t) =>
  gradcheck(t, { inputs: { x: rand([3, 5], 10, -1, -0.1) }, build: (g, x) => g.op('Relu', [x.x]) }));
test('Cast to float', (t) =>
  gradcheck(t, { inputs: { x: rand([3, 5], 11) }, build: (g, x) => g.op('Cast', [x.x], { to: 1 }) }));

test('MatMul 2-D', (t) =>
  gradcheck(t, { inputs: { a: rand([3, 4], 12), b: rand([4, 5], 13) }, build: (g, x) => g.matmul(x.a, x.b) }));
test('MatMul batched with a broadcast weight', (t) =>
  gradcheck(t, { inputs: { a: rand([2, 3, 4], 14), b: rand([4, 5], 15) }, build: (g, x) => g.matmul(x.a, x.b) }));
test('a rank-4 batch of rows through a weight and a bias: gradients summed over row chunks (rowChunks: 8 of 56)', (t) =>
  gradcheck(t, {
    inputs: { a: rand([2, 4, 7, 5], 40), b: rand([5, 3], 41), bias: rand([3], 42) },
    build: (g, x) => g.add(g.matmul(x.a, x.b), x.bias),
    sample: 60,
  }));
test('row chunks divide the rows whatever the batch: a divisor near 8 of what is known to divide the dims', (t) => {
  t.is(rowChunks(['batch', 77]), 7);
  t.is(rowChunks([2, 4, 7]), 8);
  t.is(rowChunks(['2*batch', 50]), 10);
  t.is(rowChunks(['2*batch', 'seq']), 2);
  t.is(rowChunks(['batch', 'seq']), undefined);
  t.is(rowChunks(undefined), undefined);
});
test('MatMul with broadcast batch dims on both sides', (t) =>
  gradcheck(t, { inputs: { a: rand([2, 1, 3, 4], 16), b: rand([3, 4, 1], 17) }, build: (g, x) => g.matmul(x.a, x.b) }));
for (const [transA, transB] of [
  [0, 0],
  [1, 0],
  [0, 1],
  [1, 1],
]) {
  test(`Gemm transA=${transA} transB=${transB}, alpha, beta and a broadcast bias`, (t) =>
    gradcheck(t, {
      inputs: { a: rand(transA ? [4, 3] : [3, 4], 18), b: rand(transB ? [5, 4] : [4, 5], 19), c: rand([5], 20) },
      build: (g, x) => g.op('Gemm', [x.a, x.b, x.c], { transA, transB, alpha: 0.7, beta: 1.3 }),
    }));
}

test('Transpose', (t) =>
  gradcheck(t, { inputs: { x: rand([2, 3, 4], 21) }, build: (g, x) => g.transpose(x.x, [2, 0, 1]) }));
test('Reshape, Unsqueeze, Squeeze, Flatten', (t) =>
  gradcheck(t, {
    inputs: { x: rand([2, 3, 4], 22) },
    build: (g, x) => {
      const r = g.reshape(x.x, [0, -1]);
      const u = g.unsqueeze(r, [1]);
      const s = g.op('Squeeze', [u, g.constI64([1])]);
      return g.op('Flatten', [g.mul(s, s)], { axis: 1 });
    },
  }));
test('Expand', (t) =>
  gradcheck(t, { inputs: { x: rand([3, 1], 23) }, build: (g, x) => g.op('Expand', [x.x, g.constI64([2, 3, 4])]) }));
test('Trilu', (t) =>
  gradcheck(t, {
    inputs: { x: rand([4, 4], 24) },
    build: (g, x) => g.op('Trilu', [x.x, g.constI64([1], [])], { upper: 0 }),
  }));

test('Gather rows with repeated ids (embedding)', (t) =>
  gradcheck(t, {
    inputs: { w: rand([6, 4], 25) },
    build: (g, x) => g.op('Gather', [x.w, g.constI64([1, 3, 1, 5, 0, 1], [2, 3])], { axis: 0 }),
  }));
test('Gather along axis 1', (t) =>
  gradcheck(t, {
    inputs: { w: rand([2, 5, 3], 26) },
    build: (g, x) => g.op('Gather', [x.w, g.constI64([4, 0, 4], [3])], { axis: 1 }),
  }));
test('Gather a scalar index (pooling one token)', (t) =>
  gradcheck(t, {
    inputs: { w: rand([5, 3], 27) },
    build: (g, x) => g.op('Gather', [x.w, g.constI64([2], [])], { axis: 0 }),
  }));
test('GatherElements', (t) =>
  gradcheck(t, {
    inputs: { w: rand([3, 4], 28) },
    build: (g, x) => g.op('GatherElements', [x.w, g.constI64([0, 3, 3, 1, 2, 2], [3, 2])], { axis: 1 }),
  }));

test('Concat', (t) =>
  gradcheck(t, {
    inputs: { a: rand([2, 3], 29), b: rand([2, 2], 30) },
    build: (g, x) => g.op('Concat', [x.a, x.b, x.a], { axis: -1 }),
  }));
test('Concat with symbolic sizes', (t) =>
  gradcheck(t, {
    inputs: { a: rand([2, 3], 31), b: rand([1, 3], 32) },
    dims: { a: ['n', 3], b: ['m', 3] },
    build: (g, x) => g.op('Concat', [x.a, x.b], { axis: 0 }),
  }));
test('Slice with negative starts and explicit axes', (t) =>
  gradcheck(t, {
    inputs: { x: rand([4, 5, 3], 33) },
    build: (g, x) =>
      g.op('Slice', [x.x, g.constI64([1, -3]), g.constI64([3, 1e9]), g.constI64([0, -2]), g.constI64([1, 1])]),
  }));
test('Slice without axes', (t) =>
  gradcheck(t, {
    inputs: { x: rand([4, 5], 34) },
    build: (g, x) => g.op('Slice', [x.x, g.constI64([1]), g.constI64([3])]),
  }));

for (const axis of [-1, 1]) {
  test(`Softmax axis ${axis}`, (t) =>
    gradcheck(t, { inputs: { x: rand([2, 3, 4], 35, -2, 2) }, build: (g, x) => g.op('Softmax', [x.x], { axis }) }));
  test(`LogSoftmax axis ${axis}`, (t) =>
    gradcheck(t, { inputs: { x: rand([2, 3, 4], 36, -2, 2) }, build: (g, x) => g.op('LogSoftmax', [x.x], { axis }) }));
}

/** Attention's core: softmax(scores) times V, with V reached through a Transpose as the heads are. */
function attentionCore(g: GraphBuilder, x: Record<string, string>): string {
  const v = g.op('Transpose', [x.v], { perm: [0, 2, 1, 3] });
  return g.op('MatMul', [g.op('Softmax', [x.s], { axis: -1 }), v]);
}
const coreInputs = () => ({ s: rand([2, 3, 5, 5], 37, -2, 2), v: rand([2, 5, 3, 4], 38) });

test('softmax feeding a product (attention): gradients through the row sums of the product', (t) =>
  gradcheck(t, { inputs: coreInputs(), build: attentionCore }));

test("softmax feeding a product: one pass over the probabilities, row sums from the product's output", (t) => {
  const g = new GraphBuilder();
  const x = { s: g.input('s', 'float32', [2, 3, 5, 5]), v: g.input('v', 'float32', [2, 5, 3, 4]) };
  const loss = g.op('ReduceSum', [attentionCore(g, x)], { keepdims: 0 });
  const forward = new Set(g.nodes);
  const grads = buildGradients(g, loss, ['s', 'v']);
  exposeGradients(
    g,
    grads,
    new Map([
      ['s', [2, 3, 5, 5]],
      ['v', [2, 5, 3, 4]],
    ]),
  );
  const { shapes } = interpret(g);
  const backward = g.liveNodes().filter((n) => !forward.has(n));
  const reduced = backward.filter((n) => n.op === 'ReduceSum').map((n) => shapes.get(n.inputs[0]));
  t.deepEqual(reduced, [[2, 3, 5, 4]]);
  // dS = P ⊙ ([dO, −r]·[V, 1]ᵀ): the only elementwise op on the [.., 5, 5] probabilities is that product with P.
  const square = (v: string) => JSON.stringify(shapes.get(v)) === JSON.stringify([2, 3, 5, 5]);
  const elementwise = backward.filter((n) => ['Mul', 'Sub', 'Add', 'Div'].includes(n.op) && n.inputs.some(square));
  t.deepEqual(
    elementwise.map((n) => n.op),
    ['Mul'],
  );
  // The MatMul rule's own dP = dO·Vᵀ is left unused and does not reach the model.
  const vHeads = g.nodes.find((n) => n.op === 'Transpose')!.outputs[0];
  t.deepEqual(
    backward.filter((n) => n.inputs.includes(vHeads) && n.op !== 'Shape').map((n) => n.op),
    ['Concat'],
  );
});
test('LayerNormalization over the last axis', (t) =>
  gradcheck(t, {
    inputs: { x: rand([2, 3, 6], 37, -2, 2), w: rand([6], 38, 0.5, 1.5), b: rand([6], 39) },
    build: (g, x) => g.op('LayerNormalization', [x.x, x.w, x.b], { axis: -1, epsilon: 1e-5 }),
  }));
test('LayerNormalization over the last two axes', (t) =>
  gradcheck(t, {
    inputs: { x: rand([2, 3, 4], 40, -2, 2), w: rand([3, 4], 41, 0.5, 1.5), b: rand([3, 4], 42) },
    build: (g, x) => g.op('LayerNormalization', [x.x, x.w, x.b], { axis: 1, epsilon: 1e-5 }),
  }));
test('LayerNormalization whose Mean/InvStdDev outputs are already taken recomputes its statistics', (t) =>
  gradcheck(t, {
    inputs: { x: rand([3, 5], 64, -2, 2), w: rand([5], 65, 0.5, 1.5), b: rand([5], 66) },
    build: (g, x) => g.opN('LayerNormalization', [x.x, x.w, x.b], { axis: -1, epsilon: 1e-5 }, { outputs: 3 })[0],
  }));
test('InstanceNormalization', (t) =>
  gradcheck(t, {
    inputs: { x: rand([2, 3, 2, 3], 43, -2, 2), w: rand([3], 44, 0.5, 1.5), b: rand([3], 45) },
    build: (g, x) => g.op('InstanceNormalization', [x.x, x.w, x.b], { epsilon: 1e-5 }),
  }));

for (const keepdims of [0, 1]) {
  test(`ReduceSum keepdims=${keepdims}`, (t) =>
    gradcheck(t, {
      inputs: { x: rand([2, 3, 4], 46) },
      build: (g, x) => g.op('ReduceSum', [x.x, g.constI64([0, -1])], { keepdims }),
    }));
  test(`ReduceMean keepdims=${keepdims}`, (t) =>
    gradcheck(t, {
      inputs: { x: rand([2, 3, 4], 47) },
      build: (g, x) => g.op('ReduceMean', [x.x], { axes: [1], keepdims }),
    }));
  test(`ReduceL2 keepdims=${keepdims}`, (t) =>
    gradcheck(t, {
      inputs: { x: rand([2, 3, 4], 48) },
      build: (g, x) => g.op('ReduceL2', [x.x], { axes: [-1], keepdims }),
    }));
  test(`ReduceSumSquare keepdims=${keepdims}`, (t) =>
    gradcheck(t, {
      inputs: { x: rand([2, 3, 4], 49) },
      build: (g, x) => g.op('ReduceSumSquare', [x.x], { axes: [0, 2], keepdims }),
    }));
  test(`ReduceMax keepdims=${keepdims}`, (t) =>
    gradcheck(t, {
      inputs: { x: rand([2, 3, 4], 50) },
      build: (g, x) => g.op('ReduceMax', [x.x], { axes: [1], keepdims }),
    }));
}
test('ReduceSum over all axes', (t) =>
  gradcheck(t, { inputs: { x: rand([2, 3], 51) }, build: (g, x) => g.op('ReduceSum', [x.x], { keepdims: 0 }) }));
test('L2 normalisation x / ||x||', (t) =>
  gradcheck(t, {
    inputs: { x: rand([3, 4], 52) },
    build: (g, x) => g.op('Div', [x.x, g.op('ReduceL2', [x.x], { axes: [-1], keepdims: 1 })]),
  }));

test('Conv as a patch embedding (stride = kernel, no padding)', (t) =>
  gradcheck(t, {
    inputs: { x: rand([2, 3, 4, 4], 53), w: rand([5, 3, 2, 2], 54), b: rand([5], 55) },
    build: (g, x) => g.op('Conv', [x.x, x.w, x.b], { kernel_shape: [2, 2], strides: [2, 2] }),
  }));
test('Conv with padding and a stride that leaves a remainder', (t) =>
  gradcheck(t, {
    inputs: { x: rand([1, 2, 6, 5], 56), w: rand([3, 2, 3, 3], 57) },
    build: (g, x) => g.op('Conv', [x.x, x.w], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }),
  }));

/** Random module weights under checkpoint keys, as a checkpoint would hold them. */
function randomWeights(shapes: Record<string, number[]>): MemoryWeights {
  return new MemoryWeights(
    new Map(Object.entries(shapes).map(([k, shape], i) => [k, rand(shape, 100 + i, -0.5, 0.5)])),
    'random.safetensors',
  );
}

test('a pre-LN transformer layer: LayerNorm, causal attention, quick_gelu MLP, residuals', (t) => {
  const D = 8;
  const heads = 2;
  const S = 4;
  const shapes: Record<string, number[]> = {
    'ln1.weight': [D],
    'ln1.bias': [D],
    'ln2.weight': [D],
    'ln2.bias': [D],
    'q.weight': [D, D],
    'q.bias': [D],
    'k.weight': [D, D],
    'k.bias': [D],
    'v.weight': [D, D],
    'v.bias': [D],
    'o.weight': [D, D],
    'o.bias': [D],
    'fc1.weight': [2 * D, D],
    'fc1.bias': [2 * D],
    'fc2.weight': [D, 2 * D],
    'fc2.bias': [D],
  };
  const w = randomWeights(shapes);
  for (const k of ['ln1.weight', 'ln2.weight']) {
    const a = w.map.get(k)!.data;
    for (let i = 0; i < a.length; i++) a[i] = 1 + a[i];
  }
  return gradcheck(t, {
    inputs: { x: rand([2, S, D], 60, -1, 1) },
    promote: Object.keys(shapes),
    sample: 12,
    build: (g, x) => {
      const root = Scope.root(g, w);
      const lin = (name: string, i: number, o: number) => new Linear(root.child(name), i, o);
      const h = new LayerNorm(root.child('ln1'), D, 1e-5).forward(x.x);
      const causal = g.op('Trilu', [g.constF32(new Float32Array(S * S).fill(-1e4), [S, S]), g.constI64([1], [])], {
        upper: 1,
      });
      const att = attention(
        root,
        lin('q', D, D).forward(h),
        lin('k', D, D).forward(h),
        lin('v', D, D).forward(h),
        heads,
        D / heads,
        causal,
      );
      const r1 = g.add(x.x, lin('o', D, D).forward(att));
      const m = new LayerNorm(root.child('ln2'), D, 1e-5).forward(r1);
      const act = activation(root, 'quick_gelu', lin('fc1', D, 2 * D).forward(m));
      return g.add(r1, lin('fc2', 2 * D, D).forward(act));
    },
  });
});

/** Mean cross-entropy of logits [N, C] against integer labels, the way a training graph writes it. */
function crossEntropy(g: GraphBuilder, logits: string, labels: number[]): string {
  const logp = g.op('LogSoftmax', [logits], { axis: 1 });
  const picked = g.op('GatherElements', [logp, g.constI64(labels, [labels.length, 1])], { axis: 1 });
  return g.op('Neg', [g.op('ReduceMean', [picked], { keepdims: 0 })]);
}

test('cross-entropy over logits', (t) =>
  gradcheck(t, {
    inputs: { logits: rand([4, 5], 61, -2, 2) },
    scalarLoss: true,
    build: (g, x) => crossEntropy(g, x.logits, [0, 4, 2, 2]),
  }));

test('CLIP contrastive loss: L2-normalised embeddings, learned temperature, symmetric cross-entropy', (t) =>
  gradcheck(t, {
    inputs: { a: rand([4, 6], 62), b: rand([4, 6], 63), logit_scale: f32(Float32Array.from([1.5]), []) },
    scalarLoss: true,
    build: (g, x) => {
      const unit = (v: string) => g.op('Div', [v, g.op('ReduceL2', [v], { axes: [-1], keepdims: 1 })]);
      const logits = g.mul(g.matmul(unit(x.a), g.transpose(unit(x.b), [1, 0])), g.op('Exp', [x.logit_scale]));
      const labels = [0, 1, 2, 3];
      const both = g.add(crossEntropy(g, logits, labels), crossEntropy(g, g.transpose(logits, [1, 0]), labels));
      return g.mul(both, g.scalarF32(0.5));
    },
  }));

test('an op without a gradient rule on the path to the loss is named in the error', (t) => {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [3]);
  const loss = g.op('ReduceSum', [g.op('Sin', [x], {}, { name: 'encoder.odd' })], { keepdims: 0 });
  t.throws(() => buildGradients(g, loss, ['x']), { message: /no gradient rule for op Sin \(node encoder\.odd\/Sin\)/ });
});

test('branches that no parameter reaches are not differentiated; unused parameters get zero gradients', async (t) => {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', [3]);
  const c = g.input('c', 'float32', [3]);
  g.input('unused', 'float32', [2]);
  const loss = g.op('ReduceSum', [g.add(g.mul(a, a), g.op('Sin', [c]))], { keepdims: 0 });
  g.output(loss, 'loss', 'float32', []);
  const before = g.nodes.length;
  const grads = buildGradients(g, loss, ['a', 'unused']);
  t.false(
    g.nodes.slice(before).some((n) => n.inputs.includes(c)),
    'no backward node reads the frozen branch',
  );
  exposeGradients(
    g,
    grads,
    new Map([
      ['a', [3]],
      ['unused', [2]],
    ]),
  );
  const s = await createSession(serializeModel(g));
  const res = await run(s, {
    a: f32(Float32Array.from([1, -2, 3]), [3]),
    c: f32(Float32Array.from([0, 1, 2]), [3]),
    unused: f32(new Float32Array(2), [2]),
  });
  t.deepEqual([...res['grad:a'].data], [2, -4, 6]);
  t.deepEqual([...res['grad:unused'].data], [0, 0]);
});

test('promoteToInputs refuses names that are not initializers', (t) => {
  const g = new GraphBuilder();
  g.input('x', 'float32', [1]);
  t.throws(() => promoteToInputs(g, ['x']), { message: 'promoteToInputs: x is not an initializer of the graph' });
});

test('a table only a Gather reads gets its gradient as rows, equal to the dense one summed; a table used twice does not', async (t) => {
  const table = rand([10, 3], 51);
  const ids: Tensor = { dtype: 'I64', shape: [2, 3], data: BigInt64Array.from([4n, 1n, 4n, 9n, 0n, 4n]) };
  const build = (rows: boolean, tied: boolean) => {
    const g = new GraphBuilder();
    const w = g.input('w', 'float32', [10, 3]);
    const i = g.input('ids', 'int64', [2, 3]);
    let y = g.op('Gather', [w, i]);
    if (tied) y = g.op('MatMul', [y, g.op('Transpose', [w], { perm: [1, 0] })]);
    const loss = g.op('ReduceSum', [g.mul(y, g.constant(rand(tied ? [2, 3, 10] : [2, 3, 3], 52), 'R'))], {
      keepdims: 0,
    });
    g.output(loss, 'loss', 'float32', []);
    const grads = rows ? buildGradients(g, loss, ['w'], { rows: true }) : buildGradients(g, loss, ['w']);
    return { g, grad: exposeGradients(g, grads, new Map([['w', [10, 3]]])).get('w')! };
  };
  const runGrad = async (rows: boolean, tied: boolean) => {
    const { g, grad } = build(rows, tied);
    const names = typeof grad === 'string' ? [grad] : [grad.rows, grad.values];
    return { grad, out: await runTensors(await createSession(serializeModel(g)), { w: table, ids }, names) };
  };
  const dense = (await runGrad(false, false)).out['grad:w'].data as Float32Array;
  const { grad, out } = await runGrad(true, false);
  if (typeof grad === 'string') throw new Error('expected a row gradient');
  const rows = out[grad.rows].data as BigInt64Array;
  const values = out[grad.values];
  t.deepEqual([...rows], [4n, 1n, 4n, 9n, 0n, 4n]);
  t.deepEqual(values.shape, [6, 3]);
  const summed = new Float32Array(30);
  rows.forEach((r, k) => {
    for (let j = 0; j < 3; j++) summed[Number(r) * 3 + j] += (values.data as Float32Array)[k * 3 + j];
  });
  for (let k = 0; k < 30; k++) t.true(Math.abs(summed[k] - dense[k]) < 1e-6, `value ${k}`);
  t.is(typeof (await runGrad(true, true)).grad, 'string');
});
