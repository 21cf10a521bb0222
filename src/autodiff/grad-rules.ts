import type { AttrValue, GraphBuilder, Node } from '../onnx/graph.js';
import type { SShape } from '../onnx/interpret.js';
import { knownFactor } from '../onnx/sym-dims.js';

/** What a gradient rule sees of the node it differentiates and of the graph around it. */
export interface GradContext {
  g: GraphBuilder;
  node: Node;
  /** Prefix for the backward nodes of this node. */
  name: string;
  /** Gradient of output i, undefined when nothing downstream of that output reaches the loss. */
  dy(i?: number): string | undefined;
  /** Whether input i needs a gradient. */
  needs(i: number): boolean;
  shape(v: string): SShape;
  rank(v: string): number;
  ints(v: string | undefined): number[] | undefined;
  op(type: string, inputs: string[], attrs?: Record<string, AttrValue>): string;
  /** Sum `grad` (whose shape is `from`) over the axes along which `target` was broadcast. */
  sumTo(grad: string, from: SShape, target: string): string;
  /** The whole gradient of a value that only nodes later in the forward pass use (all of them differentiated). */
  gradient(v: string): string | undefined;
  /** The forward nodes that use `v` and pass a gradient back to it. */
  users(v: string): Node[];
}

/** Gradients of a node's inputs (undefined where none is needed) from the gradients of its outputs. */
export type GradientRule = (c: GradContext) => (string | undefined)[];

const norm = (a: number, rank: number) => (a < 0 ? a + rank : a);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const out = (c: GradContext) => c.shape(c.node.outputs[0]);
const dy = (c: GradContext) => c.dy(0)!;
const scalar = (c: GradContext, v: number) => c.g.scalarF32(v);

/** Swap the last two axes of a value of known rank. */
function transposeLast(c: GradContext, v: string, rank: number): string {
  const perm = range(0, rank);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  return c.op('Transpose', [v], { perm });
}

/**
 * a·b over the last two axes with either operand transposed there. Where that operand is itself a Transpose's
 * output (attention's heads: Q, Kᵀ, V), ORT merges the two transposes into one that is no longer a swap of the last
 * axes, cannot fold it into the product and copies the whole tensor; FusedMatMul's flags read it in place. Where
 * the transposes cancel or merge into such a swap (a Linear's weight), ORT folds them itself.
 */
function productT(c: GradContext, a: string, b: string, transA: boolean, transB: boolean): string {
  const folds = (v: string, on: boolean) => !on || !unfoldableTranspose(c, v);
  if (folds(a, transA) && folds(b, transB)) {
    return c.op('MatMul', [transA ? transposeLast(c, a, c.rank(a)) : a, transB ? transposeLast(c, b, c.rank(b)) : b]);
  }
  const flags = { transA: transA ? 1 : 0, transB: transB ? 1 : 0, alpha: 1 };
  return c.g.op('FusedMatMul', [a, b], flags, { name: c.name, domain: 'com.microsoft' });
}

/** Whether `v` is a Transpose's output whose perm, then a swap of the last two axes, is neither identity nor swap. */
function unfoldableTranspose(c: GradContext, v: string): boolean {
  const producer = c.g.nodes.find((n) => n.outputs.includes(v));
  if (producer?.op !== 'Transpose') return false;
  const r = c.rank(v);
  if (r < 3) return false;
  const perm = (producer.attrs.perm as number[] | undefined) ?? range(0, r).reverse();
  const swap = range(0, r);
  [swap[r - 2], swap[r - 1]] = [swap[r - 1], swap[r - 2]];
  const merged = swap.map((i) => perm[i]);
  const same = (p: number[], q: number[]) => p.every((x, i) => x === q[i]);
  return !same(merged, range(0, r)) && !same(merged, swap);
}

/**
 * How many chunks to cut a batch of rows into for a sum over all of them (a weight or bias gradient), or undefined
 * to keep one product. MLAS parallelises a product over its output, and a weight gradient's output is small
 * ([64, 64] in the toy CLIP) while its inner dimension is every row of the batch (9,856); a batched product over 7
 * chunks gives each thread whole products with short inner loops that stay in cache (weight gradients -38% kernel
 * time, bias gradients -15%; docs/benchmarks.md). The count must divide the rows whatever the batch size, so it is
 * a divisor, near 8, of the dims known when the graph is built (77 tokens: 7).
 */
export function rowChunks(leading: SShape): number | undefined {
  if (!leading || leading.includes(null)) return undefined;
  const known = leading.reduce<number>((p, d) => p * knownFactor(d as number | string), 1);
  const divisors = range(2, 17).filter((d) => known % d === 0);
  return divisors.sort((x, y) => Math.abs(x - 8) - Math.abs(y - 8) || x - y)[0];
}

/** Gradient broadcast back over reduced axes: unsqueeze what keepdims=0 dropped, then expand to the input's shape. */
function expandReduced(c: GradContext, grad: string, axes: number[] | undefined, keepdims: boolean): string {
  const x = c.node.inputs[0];
  let gr = grad;
  if (!keepdims && axes && axes.length > 0) {
    const r = c.rank(x);
    gr = c.op('Unsqueeze', [gr, c.g.constI64(axes.map((a) => norm(a, r)))]);
  }
  return c.op('Expand', [gr, c.op('Shape', [x])]);
}

/** Axes of a reduce node: an input for ReduceSum, an attribute for the other reductions in opset 17. */
function reduceAxes(c: GradContext): number[] | undefined {
  const n = c.node;
  if (n.op === 'ReduceSum') {
    if (n.inputs[1] && !c.ints(n.inputs[1]))
      throw new Error(`autodiff: ReduceSum node ${n.name} has run-time axes; only constant axes are supported`);
    return c.ints(n.inputs[1]);
  }
  return n.attrs.axes as number[] | undefined;
}

/** Normalise over `axes` (layer / instance norm), returning d(input) and the normalised x for the affine grads. */
interface NormStats {
  mean: string;
  rstd: string;
}

/** Mean and 1/std over `axes`, recomputed from the input. */
function normStats(c: GradContext, x: string, axes: number[], eps: number): NormStats {
  const mean = c.op('ReduceMean', [x], { axes, keepdims: 1 });
  const xc = c.op('Sub', [x, mean]);
  const variance = c.op('ReduceMean', [c.op('Mul', [xc, xc])], { axes, keepdims: 1 });
  return { mean, rstd: c.op('Reciprocal', [c.op('Sqrt', [c.op('Add', [variance, scalar(c, eps)])])]) };
}

/** Backward of normalisation over `axes`, returning d(input) and the normalised x for the affine grads. */
function normBackward(
  c: GradContext,
  x: string,
  grad: string,
  scaleExpanded: string,
  axes: number[],
  { mean, rstd }: NormStats,
): { dx: string; xhat: string } {
  const xhat = c.op('Mul', [c.op('Sub', [x, mean]), rstd]);
  const gh = c.op('Mul', [grad, scaleExpanded]);
  const meanG = c.op('ReduceMean', [gh], { axes, keepdims: 1 });
  const meanGX = c.op('ReduceMean', [c.op('Mul', [gh, xhat])], { axes, keepdims: 1 });
  const dx = c.op('Mul', [rstd, c.op('Sub', [c.op('Sub', [gh, meanG]), c.op('Mul', [xhat, meanGX])])]);
  return { dx, xhat };
}

/**
 * normBackward over the last axis of width D with the two row means as products: with gh = grad ⊙ γ,
 * gh − mean(gh) = grad · Mc where Mc = diag(γ)(I − 11ᵀ/D), and mean(gh ⊙ x̂) = (grad ⊙ x̂) · γ/D. The products
 * replace a Mul, two ReduceMeans and a Sub over the [rows, D] tensors, and grad ⊙ x̂ is shared with γ's gradient:
 * six passes over the rows instead of nine. Returns d(input) and grad ⊙ x̂.
 */
function lastAxisNormBackward(
  c: GradContext,
  x: string,
  grad: string,
  scale: string,
  width: number,
  { mean, rstd }: NormStats,
): { dx: string; gx: string } {
  const centring = new Float32Array(width * width).fill(-1 / width);
  for (let i = 0; i < width; i++) centring[i * width + i] += 1;
  const mc = c.op('Mul', [c.op('Unsqueeze', [scale, c.g.constI64([1])]), c.g.constF32(centring, [width, width])]);
  const scaleOverWidth = c.op('Reshape', [c.op('Mul', [scale, scalar(c, 1 / width)]), c.g.constI64([width, 1])]);
  const xhat = c.op('Mul', [c.op('Sub', [x, mean]), rstd]);
  const gx = c.op('Mul', [grad, xhat]);
  const centred = c.op('MatMul', [grad, mc]);
  const meanGX = c.op('MatMul', [gx, scaleOverWidth]);
  return { dx: c.op('Mul', [rstd, c.op('Sub', [centred, c.op('Mul', [xhat, meanGX])])]), gx };
}

/** Give the forward node being differentiated one more output. */
function pushOutput(c: GradContext, hint: string): string {
  const name = c.g.uniqueName(`${c.node.name}:${hint}`);
  c.node.outputs.push(name);
  return name;
}

function unary(f: (c: GradContext, x: string, y: string, grad: string) => string): GradientRule {
  return (c) => [f(c, c.node.inputs[0], c.node.outputs[0], dy(c))];
}

/**
 * Softmax's backward is dS = P ⊙ (dP − rowsum(dP ⊙ P)) over the softmax axis. When P's only use is O = P·V
 * (attention), dP = dO·Vᵀ and the row sum equals rowsum(dO ⊙ O) (FlashAttention's identity), taken on the [.., seq,
 * head dim] output instead of the [.., seq, seq] probabilities. The subtraction then folds into the product:
 * [dO, −r]·[V, 1]ᵀ = dO·Vᵀ − r·1ᵀ, with one more column on two small operands, which leaves a single elementwise
 * pass over the probabilities (the product with P) instead of four. The MatMul's own dP goes unused and is pruned.
 */
function attentionBackward(c: GradContext, p: string, axis: number): string | undefined {
  const shapeP = c.shape(p);
  if (!shapeP || norm(axis, shapeP.length) !== shapeP.length - 1) return undefined;
  const users = c.users(p);
  const product = users.length === 1 ? users[0] : undefined;
  if (product?.op !== 'MatMul' || product.inputs[0] !== p || product.inputs[1] === p) return undefined;
  const [o, v] = [product.outputs[0], product.inputs[1]];
  const [shapeO, shapeV] = [c.shape(o), c.shape(v)];
  const rowsOf = (s: SShape) => JSON.stringify(s?.slice(0, -1));
  const sameRows = shapeO?.length === shapeP.length && !shapeP.includes(null) && rowsOf(shapeO) === rowsOf(shapeP);
  const dO = c.gradient(o);
  if (!sameRows || !dO || shapeV?.length !== shapeP.length) return undefined;
  const rowSums = c.op('ReduceSum', [c.op('Mul', [dO, o]), c.g.constI64([-1])], { keepdims: 1 });
  const last = c.g.constI64([-1]);
  const onesShape = c.op('Concat', [c.op('Slice', [c.op('Shape', [v]), c.g.constI64([0]), last]), c.g.constI64([1])], {
    axis: 0,
  });
  const ones = c.op('ConstantOfShape', [onesShape], {
    value: { dtype: 'F32', shape: [1], data: Float32Array.from([1]) },
  });
  const dOr = c.op('Concat', [dO, c.op('Neg', [rowSums])], { axis: -1 });
  const v1 = c.op('Concat', [v, ones], { axis: -1 });
  return c.op('Mul', [c.op('MatMul', [dOr, transposeLast(c, v1, shapeP.length)]), p]);
}

export const GRADIENT_RULES: Record<string, GradientRule> = {
  Identity: (c) => [dy(c)],
  Cast: (c) => [dy(c)],
  Neg: unary((c, _x, _y, d) => c.op('Neg', [d])),
  Exp: unary((c, _x, y, d) => c.op('Mul', [d, y])),
  Log: unary((c, x, _y, d) => c.op('Div', [d, x])),
  Sqrt: unary((c, _x, y, d) => c.op('Div', [c.op('Mul', [d, scalar(c, 0.5)]), y])),
  Reciprocal: unary((c, _x, y, d) => c.op('Neg', [c.op('Mul', [d, c.op('Mul', [y, y])])])),
  Sigmoid: unary((c, _x, y, d) => c.op('Mul', [d, c.op('Mul', [y, c.op('Sub', [scalar(c, 1), y])])])),
  // d/dx x·σ(αx) = σ(αx) (1 + αx (1 − σ(αx))), with σ(αx) recomputed rather than kept from the forward
  // pass.
  QuickGelu: unary((c, x, _y, d) => {
    const ax = c.op('Mul', [x, scalar(c, (c.node.attrs.alpha as number | undefined) ?? 1.702)]);
    const s = c.op('Sigmoid', [ax]);
    const slope = c.op('Mul', [s, c.op('Add', [c.op('Mul', [ax, c.op('Sub', [scalar(c, 1), s])]), scalar(c, 1)])]);
    return c.op('Mul', [d, slope]);
  }),
  Tanh: unary((c, _x, y, d) => c.op('Mul', [d, c.op('Sub', [scalar(c, 1), c.op('Mul', [y, y])])])),
  Erf: unary((c, x, _y, d) => {
    const gauss = c.op('Exp', [c.op('Neg', [c.op('Mul', [x, x])])]);
    return c.op('Mul', [d, c.op('Mul', [gauss, scalar(c, 2 / Math.sqrt(Math.PI))])]);
  }),
  Relu: unary((c, x, _y, d) => c.op('Where', [c.op('Greater', [x, scalar(c, 0)]), d, scalar(c, 0)])),
  Abs: unary((c, x, _y, d) => c.op('Mul', [d, c.op('Sign', [x])])),

  Add: (c) => {
    const [a, b] = c.node.inputs;
    return [c.needs(0) ? c.sumTo(dy(c), out(c), a) : undefined, c.needs(1) ? c.sumTo(dy(c), out(c), b) : undefined];
  },
  Sub: (c) => {
    const [a, b] = c.node.inputs;
    return [
      c.needs(0) ? c.sumTo(dy(c), out(c), a) : undefined,
      c.needs(1) ? c.sumTo(c.op('Neg', [dy(c)]), out(c), b) : undefined,
    ];
  },
  Sum: (c) => c.node.inputs.map((v, i) => (c.needs(i) ? c.sumTo(dy(c), out(c), v) : undefined)),
  Mul: (c) => {
    const [a, b] = c.node.inputs;
    return [
      c.needs(0) ? c.sumTo(c.op('Mul', [dy(c), b]), out(c), a) : undefined,
      c.needs(1) ? c.sumTo(c.op('Mul', [dy(c), a]), out(c), b) : undefined,
    ];
  },
  Div: (c) => {
    const [a, b] = c.node.inputs;
    const da = c.op('Div', [dy(c), b]);
    return [
      c.needs(0) ? c.sumTo(da, out(c), a) : undefined,
      c.needs(1) ? c.sumTo(c.op('Neg', [c.op('Mul', [da, c.node.outputs[0]])]), out(c), b) : undefined,
    ];
  },
  Pow: (c) => {
    const [x, e] = c.node.inputs;
    if (c.needs(1))
      throw new Error(
        `autodiff: Pow node ${c.node.name}: only a constant exponent is supported, but the exponent depends on ` +
          `the parameters`,
      );
    const slope = c.op('Mul', [e, c.op('Pow', [x, c.op('Sub', [e, scalar(c, 1)])])]);
    return [c.sumTo(c.op('Mul', [dy(c), slope]), out(c), x)];
  },
  Where: (c) => {
    const [cond, a, b] = c.node.inputs;
    const zero = scalar(c, 0);
    return [
      undefined,
      c.needs(1) ? c.sumTo(c.op('Where', [cond, dy(c), zero]), out(c), a) : undefined,
      c.needs(2) ? c.sumTo(c.op('Where', [cond, zero, dy(c)]), out(c), b) : undefined,
    ];
  },
  Expand: (c) => [c.sumTo(dy(c), out(c), c.node.inputs[0])],

  MatMul: (c) => {
    const [a, b] = c.node.inputs;
    const ra = c.rank(a);
    const rb = c.rank(b);
    if (ra < 2 || rb < 2) throw new Error(`autodiff: MatMul node ${c.node.name}: 1-D operands are not supported`);
    // Each product has the output's batch dims and the operand's own matrix dims.
    const ys = out(c);
    const like = (v: string): SShape => {
      const s = c.shape(v);
      return ys && s ? [...ys.slice(0, -2), ...s.slice(-2)] : undefined;
    };
    // A 2-D weight applied to a batch of rows: its gradient is a product over all rows (in chunks, see rowChunks),
    // not a product per batch item followed by a reduction over the batch.
    const flatWeightGrad = () => {
      const chunks = rowChunks(c.shape(a)?.slice(0, -1));
      const [inDim, outDim] = c.shape(b) ?? [];
      if (!chunks || typeof inDim !== 'number' || typeof outDim !== 'number')
        return c.op('Gemm', [c.op('Flatten', [a], { axis: ra - 1 }), c.op('Flatten', [dy(c)], { axis: ra - 1 })], {
          transA: 1,
        });
      const split = (v: string, width: number) => c.op('Reshape', [v, c.g.constI64([chunks, -1, width])]);
      const perChunk = c.g.op(
        'FusedMatMul',
        [split(a, inDim), split(dy(c), outDim)],
        { transA: 1, alpha: 1 },
        {
          name: c.name,
          domain: 'com.microsoft',
        },
      );
      return c.op('ReduceSum', [perChunk, c.g.constI64([0])], { keepdims: 0 });
    };
    return [
      c.needs(0) ? c.sumTo(productT(c, dy(c), b, false, true), like(a), a) : undefined,
      c.needs(1)
        ? rb === 2 && ra > 2
          ? flatWeightGrad()
          : c.sumTo(productT(c, a, dy(c), true, false), like(b), b)
        : undefined,
    ];
  },
  Gemm: (c) => {
    const [a, b, bias] = c.node.inputs;
    const { alpha = 1, beta = 1, transA = 0, transB = 0 } = c.node.attrs as Record<string, number>;
    const d = alpha === 1 ? dy(c) : c.op('Mul', [dy(c), scalar(c, alpha)]);
    // Y = A'B': dA' = dY B'^T, dB' = A'^T dY, expressed with Gemm's own transposition flags.
    const da = transA
      ? c.op('Gemm', [b, d], { transA: transB, transB: 1 })
      : c.op('Gemm', [d, b], { transB: transB ? 0 : 1 });
    const db = transB
      ? c.op('Gemm', [d, a], { transA: 1, transB: transA })
      : c.op('Gemm', [a, d], { transA: transA ? 0 : 1 });
    const dc =
      bias && c.needs(2)
        ? c.sumTo(beta === 1 ? dy(c) : c.op('Mul', [dy(c), scalar(c, beta)]), out(c), bias)
        : undefined;
    return [c.needs(0) ? da : undefined, c.needs(1) ? db : undefined, dc];
  },

  Transpose: (c) => {
    const x = c.node.inputs[0];
    const perm = (c.node.attrs.perm as number[] | undefined) ?? range(0, c.rank(x)).reverse();
    const inverse = new Array<number>(perm.length);
    perm.forEach((p, i) => {
      inverse[p] = i;
    });
    return [c.op('Transpose', [dy(c)], { perm: inverse })];
  },
  Reshape: (c) => [c.op('Reshape', [dy(c), c.op('Shape', [c.node.inputs[0]])])],
  Flatten: (c) => [c.op('Reshape', [dy(c), c.op('Shape', [c.node.inputs[0]])])],
  Squeeze: (c) => [c.op('Reshape', [dy(c), c.op('Shape', [c.node.inputs[0]])])],
  Unsqueeze: (c) => [c.op('Reshape', [dy(c), c.op('Shape', [c.node.inputs[0]])])],
  Trilu: (c) => [c.op('Trilu', c.node.inputs[1] ? [dy(c), c.node.inputs[1]] : [dy(c)], c.node.attrs), undefined],

  Concat: (c) => {
    const inputs = c.node.inputs;
    const axis = norm(c.node.attrs.axis as number, c.rank(inputs[0]));
    const sizes = inputs.map((v) => c.shape(v)?.[axis]);
    const split = sizes.every((s) => typeof s === 'number')
      ? c.g.constI64(sizes as number[])
      : c.op(
          'Concat',
          inputs.map((v) => c.op('Shape', [v], { start: axis, end: axis + 1 })),
          { axis: 0 },
        );
    const parts = c.g.opN('Split', [dy(c), split], { axis }, { name: c.name, outputs: inputs.length });
    return parts.map((p, i) => (c.needs(i) ? p : undefined));
  },
  Slice: (c) => {
    const [x, starts, , axesIn, stepsIn] = c.node.inputs;
    const steps = stepsIn ? c.ints(stepsIn) : undefined;
    if (stepsIn && (!steps || steps.some((s) => s !== 1)))
      throw new Error(`autodiff: Slice node ${c.node.name}: only unit steps are supported`);
    const r = c.rank(x);
    const count = c.shape(starts)?.[0];
    const axesConst = axesIn ? c.ints(axesIn) : typeof count === 'number' ? range(0, count) : undefined;
    if (!axesConst) throw new Error(`autodiff: Slice node ${c.node.name}: axes must be constant`);
    const axes = c.g.constI64(axesConst.map((a) => norm(a, r)));
    // Pad the gradient back into place: begin = clamped start, end = what remains of each input dim.
    const dims = c.op('Shape', [x]);
    const axisDims = c.op('Gather', [dims, axes], { axis: 0 });
    const wrapped = c.op('Where', [c.op('Less', [starts, c.g.constI64([0])]), c.op('Add', [starts, axisDims]), starts]);
    const start = c.op('Max', [c.op('Min', [wrapped, axisDims]), c.g.constI64([0])]);
    const begin = c.op('ScatterElements', [c.g.constI64(new Array(r).fill(0)), axes, start], { axis: 0 });
    const end = c.op('Sub', [c.op('Sub', [dims, begin]), c.op('Shape', [dy(c)])]);
    return [c.op('Pad', [dy(c), c.op('Concat', [begin, end], { axis: 0 })])];
  },
  Gather: (c) => {
    const [data, indices] = c.node.inputs;
    const zeros = c.op('ConstantOfShape', [c.op('Shape', [data])]);
    const axisAttr = (c.node.attrs.axis as number | undefined) ?? 0;
    const idx = c.op('Unsqueeze', [indices, c.g.constI64([-1])]);
    if (axisAttr === 0) return [c.op('ScatterND', [zeros, idx, dy(c)], { reduction: 'add' }), undefined];
    // Bring the gathered axis to the front, scatter rows there, and move it back.
    const r = c.rank(data);
    const ri = c.rank(indices);
    const axis = norm(axisAttr, r);
    const front = [axis, ...range(0, axis), ...range(axis + 1, r)];
    const gradFront = [...range(axis, axis + ri), ...range(0, axis), ...range(axis + ri, r - 1 + ri)];
    const scattered = c.op(
      'ScatterND',
      [c.op('Transpose', [zeros], { perm: front }), idx, c.op('Transpose', [dy(c)], { perm: gradFront })],
      { reduction: 'add' },
    );
    const back = new Array<number>(r);
    front.forEach((p, i) => {
      back[p] = i;
    });
    return [c.op('Transpose', [scattered], { perm: back }), undefined];
  },
  GatherElements: (c) => {
    const [data, indices] = c.node.inputs;
    const zeros = c.op('ConstantOfShape', [c.op('Shape', [data])]);
    return [
      c.op('ScatterElements', [zeros, indices, dy(c)], { axis: (c.node.attrs.axis as number) ?? 0, reduction: 'add' }),
      undefined,
    ];
  },

  ReduceSum: (c) => [expandReduced(c, dy(c), reduceAxes(c), (c.node.attrs.keepdims ?? 1) !== 0), undefined],
  ReduceMean: (c) => {
    const [x] = c.node.inputs;
    const count = c.op('Div', [
      c.op('Cast', [c.op('Size', [x])], { to: 1 }),
      c.op('Cast', [c.op('Size', [c.node.outputs[0]])], { to: 1 }),
    ]);
    return [expandReduced(c, c.op('Div', [dy(c), count]), reduceAxes(c), (c.node.attrs.keepdims ?? 1) !== 0)];
  },
  ReduceSumSquare: (c) => {
    const [x] = c.node.inputs;
    const d = expandReduced(c, dy(c), reduceAxes(c), (c.node.attrs.keepdims ?? 1) !== 0);
    return [c.op('Mul', [d, c.op('Mul', [x, scalar(c, 2)])])];
  },
  ReduceL2: (c) => {
    const [x] = c.node.inputs;
    const keep = (c.node.attrs.keepdims ?? 1) !== 0;
    const d = expandReduced(c, c.op('Div', [dy(c), c.node.outputs[0]]), reduceAxes(c), keep);
    return [c.op('Mul', [d, x])];
  },
  ReduceMax: (c) => {
    // The gradient goes to the maxima (split evenly between ties).
    const [x] = c.node.inputs;
    const keep = (c.node.attrs.keepdims ?? 1) !== 0;
    const axes = reduceAxes(c);
    const y = expandReduced(c, c.node.outputs[0], axes, keep);
    const hit = c.op('Cast', [c.op('Equal', [x, y])], { to: 1 });
    const ties = c.op('ReduceSum', axes ? [hit, c.g.constI64(axes)] : [hit], { keepdims: 1 });
    const d = expandReduced(c, dy(c), axes, keep);
    return [c.op('Div', [c.op('Mul', [d, hit]), ties])];
  },

  Softmax: (c) => {
    const y = c.node.outputs[0];
    const axis = (c.node.attrs.axis as number | undefined) ?? -1;
    const attention = attentionBackward(c, y, axis);
    if (attention) return [attention];
    const gy = c.op('Mul', [dy(c), y]);
    const s = c.op('ReduceSum', [gy, c.g.constI64([axis])], { keepdims: 1 });
    return [c.op('Sub', [gy, c.op('Mul', [y, s])])];
  },
  LogSoftmax: (c) => {
    const y = c.node.outputs[0];
    const axis = (c.node.attrs.axis as number | undefined) ?? -1;
    const s = c.op('ReduceSum', [dy(c), c.g.constI64([axis])], { keepdims: 1 });
    return [c.op('Sub', [dy(c), c.op('Mul', [c.op('Exp', [y]), s])])];
  },
  LayerNormalization: (c) => {
    if (c.node.outputs.length > 1 && [1, 2].some((i) => c.dy(i)))
      throw new Error(
        `autodiff: LayerNormalization node ${c.node.name}: gradients through Mean/InvStdDev outputs are not supported`,
      );
    const [x, scale, bias] = c.node.inputs;
    const axis = (c.node.attrs.axis as number | undefined) ?? -1;
    const eps = (c.node.attrs.epsilon as number | undefined) ?? 1e-5;
    const axes = axis < 0 ? range(axis, 0) : range(axis, c.rank(x));
    // The forward kernel already computes Mean and InvStdDev: expose them as its optional outputs instead of
    // recomputing them, unless the graph uses those outputs itself.
    const outs = c.node.outputs;
    const stats =
      outs.length === 1 ? { mean: pushOutput(c, 'mean'), rstd: pushOutput(c, 'inv_std') } : normStats(c, x, axes, eps);
    const width = c.shape(x)?.at(-1);
    const ys = out(c);
    if (axes.length === 1 && typeof width === 'number' && c.shape(scale)?.length === 1) {
      const { dx, gx } = lastAxisNormBackward(c, x, dy(c), scale, width, stats);
      return [
        c.needs(0) ? dx : undefined,
        c.needs(1) ? c.sumTo(gx, ys, scale) : undefined,
        bias && c.needs(2) ? c.sumTo(dy(c), ys, bias) : undefined,
      ];
    }
    const { dx, xhat } = normBackward(c, x, dy(c), scale, axes, stats);
    return [
      c.needs(0) ? dx : undefined,
      c.needs(1) ? c.sumTo(c.op('Mul', [dy(c), xhat]), ys, scale) : undefined,
      bias && c.needs(2) ? c.sumTo(dy(c), ys, bias) : undefined,
    ];
  },
  InstanceNormalization: (c) => {
    const [x, scale] = c.node.inputs;
    const r = c.rank(x);
    const eps = (c.node.attrs.epsilon as number | undefined) ?? 1e-5;
    const channelShape = c.g.constI64([-1, ...new Array(r - 2).fill(1)]);
    const perChannel = (v: string) => c.op('Reshape', [v, channelShape]);
    const { dx, xhat } = normBackward(c, x, dy(c), perChannel(scale), range(2, r), normStats(c, x, range(2, r), eps));
    const overAllButChannels = c.g.constI64([0, ...range(2, r)]);
    return [
      c.needs(0) ? dx : undefined,
      c.needs(1) ? c.op('ReduceSum', [c.op('Mul', [dy(c), xhat]), overAllButChannels], { keepdims: 0 }) : undefined,
      c.needs(2) ? c.op('ReduceSum', [dy(c), overAllButChannels], { keepdims: 0 }) : undefined,
    ];
  },

  Conv: (c) => {
    const [x, w, bias] = c.node.inputs;
    const a = c.node.attrs;
    const spatial = c.rank(x) - 2;
    if (spatial !== 2) throw new Error(`autodiff: Conv node ${c.node.name}: only 2-D convolutions are supported`);
    if ((a.group ?? 1) !== 1)
      throw new Error(`autodiff: Conv node ${c.node.name}: grouped convolutions are not supported`);
    if (a.dilations && (a.dilations as number[]).some((d) => d !== 1))
      throw new Error(`autodiff: Conv node ${c.node.name}: dilated convolutions are not supported`);
    if (a.auto_pad && a.auto_pad !== 'NOTSET')
      throw new Error(`autodiff: Conv node ${c.node.name}: auto_pad is not supported, give explicit pads`);
    const strides = (a.strides as number[] | undefined) ?? [1, 1];
    const pads = (a.pads as number[] | undefined) ?? [0, 0, 0, 0];
    const d = dy(c);
    let dx: string | undefined;
    if (c.needs(0)) {
      // ConvTranspose undoes the stride. Only the leading pads are cropped there; the trailing end is cut to the
      // input's size, and input rows the forward conv never reached (floor division) get zero gradient.
      const size = c.op('Shape', [x], { start: 2 });
      const full = c.op('ConvTranspose', [d, w], { strides, pads: [pads[0], pads[1], 0, 0] });
      const back = c.op('Slice', [full, c.g.constI64([0, 0]), size, c.g.constI64([2, 3])]);
      const missing = c.op('Sub', [size, c.op('Shape', [back], { start: 2 })]);
      dx = c.op('Pad', [back, c.op('Concat', [c.g.constI64([0, 0, 0, 0, 0, 0]), missing], { axis: 0 })]);
    }
    let dw: string | undefined;
    if (c.needs(1)) {
      // dW[o,c] = sum over n of x[n,c] correlated with dy[n,o] dilated by the stride: one Conv with batch and
      // channels swapped, cropped to the kernel size.
      const kernel = c.op('Shape', [w], { start: 2 });
      const xt = c.op('Transpose', [x], { perm: [1, 0, 2, 3] });
      const dt = c.op('Transpose', [d], { perm: [1, 0, 2, 3] });
      const full = c.op('Conv', [xt, dt], { dilations: strides, pads });
      const cropped = c.op('Slice', [full, c.g.constI64([0, 0]), kernel, c.g.constI64([2, 3])]);
      dw = c.op('Transpose', [cropped], { perm: [1, 0, 2, 3] });
    }
    const db = bias && c.needs(2) ? c.op('ReduceSum', [d, c.g.constI64([0, 2, 3])], { keepdims: 0 }) : undefined;
    return [dx, dw, db];
  },
};
