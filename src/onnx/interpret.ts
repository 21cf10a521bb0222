import type { Dim, ElemType, GraphBuilder, Node } from './graph.js';
import { addSize, divSizeExact, mulSize, subSize, type Size } from './sym-dims.js';

/**
 * The one static interpreter of the graph IR: a single op table gives, per op, the element types and shapes of the
 * outputs, the contents of small numeric outputs (shapes, sizes, slice bounds, resize scales) and the FLOPs. The
 * gradient builder reads shapes from it, the FLOP counter its FLOPs, float16 conversion its element types.
 *
 * A dim is a number, a symbolic size (a polynomial over the graph's named dims in canonical form, see sym-dims.ts:
 * same string = same size), or null when unknown; a whole shape is undefined when not even the rank is known.
 * Tracking the contents of small tensors is what lets a Reshape, Slice or Resize whose target is computed at run
 * time from `Shape` still have a known result shape.
 */
export type SDim = Size | null;
export type SShape = SDim[] | undefined;
/** Element by element contents of a small numeric tensor (rank 0 or 1), or undefined when not known. */
export type SValue = SDim[] | undefined;

/** What an op rule sees of its node: the facts already known about its inputs. */
export interface OpContext {
  node: Node;
  shape(i: number): SShape;
  value(i: number): SValue;
  type(i: number): ElemType | undefined;
  /** Input i's contents when every element is a known number (constant axes, pads, split sizes). */
  numbers(i: number): number[] | undefined;
  /** An integer attribute, or `fallback` when the node does not set it. */
  int(name: string, fallback: number): number;
  attr<T>(name: string): T | undefined;
}

export interface OpRule {
  /** Shapes of the outputs; absent: output 0 has the shape of input 0 (and further outputs are unknown). */
  shapes?(c: OpContext): SShape[];
  /** Element types of the outputs; absent: every output has the type of input 0. */
  types?(c: OpContext): (ElemType | undefined)[];
  /** Contents of output 0 when it is a small tensor whose inputs determine it. */
  value?(c: OpContext): SValue;
  /**
   * FLOPs, 2 per multiply-add; absent: not counted. Only ops built on products of matrices are counted: the
   * element-wise ops are a few per mille of a UNet and no GEMM reference measures them.
   */
  flops?(c: OpContext, out: SShape[]): SDim;
}

/** Tensors longer than this are not tracked: shape arithmetic only ever handles a few sizes. */
const MAX_TRACKED = 16;
/** Slice ends at or above this mean "to the end of the axis" (INT_MAX and INT64_MAX in exporters' graphs). */
const TO_END = 2 ** 31 - 1;

const known = (d: SDim | undefined): d is Size => d !== null && d !== undefined;
const normAxis = (a: number, rank: number) => (a < 0 ? a + rank : a);

/** Product of sizes, or null when one is unknown. */
export function product(dims: SDim[]): SDim {
  let p: Size = 1;
  for (const d of dims) {
    if (!known(d)) return null;
    p = mulSize(p, d);
  }
  return p;
}

/** Numpy broadcasting; two different constant sizes on one axis are an error in the graph. */
function broadcast(shapes: SShape[], where: string): SShape {
  if (shapes.some((s) => s === undefined)) return undefined;
  const ss = shapes as SDim[][];
  const rank = Math.max(...ss.map((s) => s.length));
  const out: SDim[] = [];
  for (let i = 0; i < rank; i++) {
    const dims = ss.map((s) => s[s.length - rank + i]).filter((d) => d !== undefined && d !== 1);
    const numbers = new Set(dims.filter((d) => typeof d === 'number'));
    if (numbers.size > 1) throw new Error(`${where}: cannot broadcast ${ss.map((s) => `[${s}]`).join(' with ')}`);
    if (dims.length === 0) out.push(1);
    else if (numbers.size === 1) out.push([...numbers][0]);
    else if (dims.every((d) => d === dims[0])) out.push(dims[0]);
    else out.push(null);
  }
  return out;
}

function reduced(x: SShape, axes: number[] | undefined, keepdims: boolean): SShape {
  if (!x) return undefined;
  const all = axes === undefined || axes.length === 0;
  const set = new Set(all ? x.map((_, i) => i) : axes.map((a) => normAxis(a, x.length)));
  return keepdims ? x.map((d, i) => (set.has(i) ? 1 : d)) : x.filter((_, i) => !set.has(i));
}

/**
 * Length of x[start:end] along an axis of size d (step 1). Constant bounds on a constant size clamp as ONNX does;
 * a bound that is symbolic, or constant against a symbolic size, is taken to lie inside the axis, which holds for
 * the graphs built here (a batch half sliced out of a concatenated batch, positions up to the sequence length).
 */
function sliceLength(d: SDim, start: SDim, end: SDim): SDim {
  if (!known(start) || !known(end)) return null;
  if (typeof d === 'number' && typeof start === 'number' && typeof end === 'number') {
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
    return Math.max(clamp(end) - clamp(start), 0);
  }
  const bound = (v: Size): SDim => {
    if (typeof v !== 'number') return v;
    if (v >= TO_END) return d;
    if (v < 0) return known(d) ? addSize(d, v) : null;
    return v;
  };
  const [s, e] = [bound(start), bound(end)];
  if (!known(s) || !known(e)) return null;
  const len = subSize(e, s);
  return typeof len === 'number' ? Math.max(len, 0) : len;
}

const isInt = (t: ElemType | undefined) => t === 'int64' || t === 'int32' || t === 'uint8';

/** Element-wise arithmetic on tracked contents, with ONNX's truncating division for integers. */
function arithmetic(c: OpContext): SValue {
  const [a, b] = [c.value(0), c.value(1)];
  if (!a || !b || (a.length !== b.length && a.length !== 1 && b.length !== 1)) return undefined;
  const div = (x: Size, y: Size): Size | undefined => {
    if (typeof x === 'number' && typeof y === 'number') return isInt(c.type(0)) ? Math.trunc(x / y) : x / y;
    return divSizeExact(x, y);
  };
  const f = { Add: addSize, Sub: subSize, Mul: mulSize, Div: div }[c.node.op]!;
  return Array.from({ length: Math.max(a.length, b.length) }, (_, i) => {
    const [x, y] = [a[a.length === 1 ? 0 : i], b[b.length === 1 ? 0 : i]];
    return known(x) && known(y) ? (f(x, y) ?? null) : null;
  });
}

/** Output size of a convolution window sliding over an axis of size d. */
function windowed(d: SDim, kernel: number, padSum: number, stride: number, dilation: number): SDim {
  if (!known(d)) return null;
  const span = padSum - dilation * (kernel - 1) - 1;
  if (typeof d === 'number') return Math.floor((d + span) / stride) + 1;
  const q = divSizeExact(addSize(d, span), stride);
  return q === undefined ? null : addSize(q, 1);
}

const CAST_TYPES: Record<number, ElemType> = {
  1: 'float32',
  10: 'float16',
  7: 'int64',
  6: 'int32',
  9: 'bool',
  2: 'uint8',
};
const TENSOR_TYPES: Record<string, ElemType> = {
  F32: 'float32',
  F16: 'float16',
  I64: 'int64',
  I32: 'int32',
  BOOL: 'bool',
  U8: 'uint8',
};

const sameShape: OpRule = {};
const broadcasting: OpRule = {
  shapes: (c) => [
    broadcast(
      c.node.inputs.map((_, i) => c.shape(i)),
      c.node.name,
    ),
  ],
};
const passValue: OpRule = { value: (c) => c.value(0) };
const toBool: OpRule = { ...broadcasting, types: () => ['bool'] };
const arithmeticOp: OpRule = { ...broadcasting, value: arithmetic };

/** Reductions whose axes are an attribute (opset 17 except ReduceSum). */
const reduceByAttr: OpRule = {
  shapes: (c) => [reduced(c.shape(0), c.attr<number[]>('axes'), c.int('keepdims', 1) !== 0)],
};
const argReduce: OpRule = {
  shapes: (c) => [reduced(c.shape(0), [c.int('axis', 0)], c.int('keepdims', 1) !== 0)],
  types: () => ['int64'],
};

export const OPS: Record<string, OpRule> = {
  ...Object.fromEntries(
    [
      'Sigmoid',
      'QuickGelu',
      'Tanh',
      'Erf',
      'Exp',
      'Log',
      'Sqrt',
      'Neg',
      'Relu',
      'Reciprocal',
      'Abs',
      'Sin',
      'Cos',
      'Softmax',
      'LogSoftmax',
      'Clip',
      'LayerNormalization',
      'InstanceNormalization',
      'GroupNormalization',
      'Trilu',
      'Dropout',
      'Floor',
      'Ceil',
      'Round',
      'Sign',
    ].map((op) => [op, sameShape]),
  ),
  ...Object.fromEntries(['Pow', 'Max', 'Min', 'Sum'].map((op) => [op, broadcasting])),
  ...Object.fromEntries(['Add', 'Sub', 'Mul', 'Div'].map((op) => [op, arithmeticOp])),
  ...Object.fromEntries(
    ['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor'].map((op) => [op, toBool]),
  ),
  ...Object.fromEntries(
    ['ReduceMean', 'ReduceL2', 'ReduceSumSquare', 'ReduceMax', 'ReduceMin', 'ReduceProd'].map((op) => [
      op,
      reduceByAttr,
    ]),
  ),
  Not: { types: () => ['bool'] },
  IsNaN: { types: () => ['bool'] },
  IsInf: { types: () => ['bool'] },
  ArgMax: argReduce,
  ArgMin: argReduce,
  Identity: passValue,
  Where: { ...broadcasting, types: (c) => [c.type(1)] },
  Cast: {
    types: (c) => [CAST_TYPES[c.int('to', 0)]],
    value: (c) => (c.int('to', 0) === 1 || c.int('to', 0) === 10 ? undefined : c.value(0)),
  },
  MatMul: {
    shapes: (c) => {
      const [a, b] = [c.shape(0), c.shape(1)];
      if (!a || !b || a.length < 2 || b.length < 2) return [undefined];
      return [[...broadcast([a.slice(0, -2), b.slice(0, -2)], c.node.name)!, a[a.length - 2], b[b.length - 1]]];
    },
    flops: (c, [y]) => {
      const a = c.shape(0);
      return y && a ? product([2, ...y, a[a.length - 1]]) : null;
    },
  },
  Gemm: {
    shapes: (c) => {
      const [a, b] = [c.shape(0), c.shape(1)];
      if (!a || !b) return [undefined];
      return [[c.int('transA', 0) ? a[1] : a[0], c.int('transB', 0) ? b[0] : b[1]]];
    },
    flops: (c, [y]) => {
      const a = c.shape(0);
      return y && a ? product([2, ...y, c.int('transA', 0) ? a[0] : a[1]]) : null;
    },
  },
  Conv: {
    shapes: (c) => {
      const [x, w] = [c.shape(0), c.shape(1)];
      if (!x || !w) return [undefined];
      const spatial = x.length - 2;
      const kernel = w.slice(2);
      const pads = c.attr<number[]>('pads') ?? Array(2 * spatial).fill(0);
      const strides = c.attr<number[]>('strides') ?? Array(spatial).fill(1);
      const dilations = c.attr<number[]>('dilations') ?? Array(spatial).fill(1);
      if ((c.attr<string>('auto_pad') ?? 'NOTSET') !== 'NOTSET') return [[x[0], w[0], ...x.slice(2).map(() => null)]];
      return [
        [
          x[0],
          w[0],
          ...x.slice(2).map((d, i) => {
            const k = kernel[i];
            return typeof k === 'number' ? windowed(d, k, pads[i] + pads[i + spatial], strides[i], dilations[i]) : null;
          }),
        ],
      ];
    },
    // Each output element is a dot product over one group's input channels and the kernel window: w[1] * prod(k).
    flops: (c, [y]) => {
      const w = c.shape(1);
      return y && w ? product([2, ...y, ...w.slice(1)]) : null;
    },
  },
  MultiHeadAttention: {
    shapes: (c) => {
      const [q, v] = [c.shape(0), c.shape(2)];
      return [q && v ? [q[0], q[1], v[2]] : undefined];
    },
    // QK^T and attention times V: [B, S, D] x [B, L, D] twice (heads split D, so they do not change the count).
    flops: (c) => {
      const [q, k] = [c.shape(0), c.shape(1)];
      return q && k ? product([4, q[0], q[1], k[1], q[2]]) : null;
    },
  },
  Transpose: {
    shapes: (c) => {
      const x = c.shape(0);
      if (!x) return [undefined];
      const perm = c.attr<number[]>('perm') ?? x.map((_, i) => x.length - 1 - i);
      return [perm.map((p) => x[p])];
    },
  },
  Reshape: {
    shapes: (c) => {
      const x = c.shape(0);
      const target = c.value(1);
      if (!target) {
        const len = c.shape(1)?.[0];
        return [typeof len === 'number' ? Array<SDim>(len).fill(null) : undefined];
      }
      const dims = target.map((d, i) => (d === 0 && !c.int('allowzero', 0) ? (x?.[i] ?? null) : d));
      const free = dims.indexOf(-1);
      if (free >= 0) {
        const total = x ? product(x) : null;
        const rest = product(dims.filter((_, i) => i !== free));
        dims[free] = known(total) && known(rest) ? (divSizeExact(total, rest) ?? null) : null;
      }
      return [dims];
    },
    value: (c) => c.value(0),
  },
  Unsqueeze: {
    shapes: (c) => {
      const [x, axes] = [c.shape(0), c.numbers(1)];
      if (!x || !axes) return [undefined];
      const rank = x.length + axes.length;
      const set = new Set(axes.map((ax) => normAxis(ax, rank)));
      let j = 0;
      return [Array.from({ length: rank }, (_, i) => (set.has(i) ? 1 : x[j++]))];
    },
    value: (c) => c.value(0),
  },
  Squeeze: {
    shapes: (c) => {
      const x = c.shape(0);
      if (x && !c.node.inputs[1] && x.every((d) => typeof d === 'number')) return [x.filter((d) => d !== 1)];
      const axes = c.numbers(1);
      if (!x || !axes) return [undefined];
      const set = new Set(axes.map((ax) => normAxis(ax, x.length)));
      return [x.filter((_, i) => !set.has(i))];
    },
    value: (c) => c.value(0),
  },
  Flatten: {
    shapes: (c) => {
      const x = c.shape(0);
      if (!x) return [undefined];
      const axis = normAxis(c.int('axis', 1), x.length);
      return [[product(x.slice(0, axis)), product(x.slice(axis))]];
    },
  },
  Gather: {
    shapes: (c) => {
      const [x, idx] = [c.shape(0), c.shape(1)];
      if (!x || !idx) return [undefined];
      const ax = normAxis(c.int('axis', 0), x.length);
      return [[...x.slice(0, ax), ...idx, ...x.slice(ax + 1)]];
    },
    value: (c) => {
      const [x, idx] = [c.value(0), c.value(1)];
      if (!x || !idx || c.int('axis', 0) !== 0) return undefined;
      return idx.map((i) => (typeof i === 'number' ? (x[i < 0 ? i + x.length : i] ?? null) : null));
    },
  },
  GatherElements: { shapes: (c) => [c.shape(1)] },
  Concat: {
    shapes: (c) => {
      const all = c.node.inputs.map((_, i) => c.shape(i));
      if (all.some((s) => !s)) return [undefined];
      const ax = normAxis(c.int('axis', 0), all[0]!.length);
      const out = [...all[0]!];
      out[ax] = all.reduce<SDim>((sum, s) => (known(sum) && known(s![ax]) ? addSize(sum, s![ax]!) : null), 0);
      return [out];
    },
    value: (c) => {
      const parts = c.node.inputs.map((_, i) => c.value(i));
      return parts.every((p) => p) ? parts.flatMap((p) => p!) : undefined;
    },
  },
  Split: {
    shapes: (c) => {
      const x = c.shape(0);
      if (!x) return c.node.outputs.map(() => undefined);
      const ax = normAxis(c.int('axis', 0), x.length);
      const n = c.node.outputs.length;
      const sizes: SDim[] = c.node.inputs[1]
        ? (c.value(1) ?? Array(n).fill(null))
        : Array(n).fill(known(x[ax]) ? (divSizeExact(x[ax]!, n) ?? null) : null);
      return sizes.map((len) => x.map((d, i) => (i === ax ? len : d)));
    },
  },
  Slice: {
    shapes: (c) => {
      const x = c.shape(0);
      if (!x) return [undefined];
      const [starts, ends] = [c.value(1), c.value(2)];
      const axes = c.node.inputs[3] ? c.numbers(3) : starts?.map((_, i) => i);
      if (!axes) return [x.map(() => null)];
      const steps = c.node.inputs[4] ? c.numbers(4) : undefined;
      const out: SDim[] = [...x];
      axes.forEach((ax, k) => {
        const i = normAxis(ax, x.length);
        out[i] = starts && ends && (!steps || steps[k] === 1) ? sliceLength(x[i], starts[k], ends[k]) : null;
      });
      return [out];
    },
    value: (c) => {
      const [x, starts, ends] = [c.value(0), c.numbers(1), c.numbers(2)];
      const axes = c.node.inputs[3] ? c.numbers(3) : [0];
      const steps = c.node.inputs[4] ? c.numbers(4) : [1];
      if (!x || !starts || !ends || axes?.[0] !== 0 || steps?.[0] !== 1) return undefined;
      return x.slice(starts[0], ends[0]);
    },
  },
  Pad: {
    shapes: (c) => {
      const [x, pads] = [c.shape(0), c.value(1)];
      if (!x) return [undefined];
      if (!pads || c.node.inputs[3]) return [x.map(() => null)];
      return [
        x.map((d, i) => {
          const [before, after] = [pads[i], pads[i + x.length]];
          return known(d) && known(before) && known(after) ? addSize(addSize(d, before), after) : null;
        }),
      ];
    },
  },
  Resize: {
    shapes: (c) => {
      const x = c.shape(0);
      if (!x) return [undefined];
      if (c.node.inputs[3]) return [c.value(3) ?? x.map(() => null)];
      const scales = c.numbers(2);
      if (!scales) return [x.map(() => null)];
      return [
        x.map((d, i) => {
          if (typeof d === 'number') return Math.floor(d * scales[i]);
          return known(d) && Number.isInteger(scales[i]) ? mulSize(d, scales[i]) : null;
        }),
      ];
    },
  },
  ReduceSum: {
    shapes: (c) => {
      const [x, keepdims] = [c.shape(0), c.int('keepdims', 1) !== 0];
      if (!c.node.inputs[1]) return [reduced(x, undefined, keepdims)];
      const axes = c.numbers(1);
      if (axes) return [reduced(x, axes, keepdims)];
      // Axes computed at run time: with keepdims the rank is still known.
      return [keepdims && x ? x.map(() => null) : undefined];
    },
  },
  Shape: {
    shapes: (c) => {
      const v = OPS.Shape.value!(c);
      return [v ? [v.length] : [null]];
    },
    types: () => ['int64'],
    value: (c) => c.shape(0)?.slice(c.attr<number>('start'), c.attr<number>('end')),
  },
  Size: {
    shapes: () => [[]],
    types: () => ['int64'],
    value: (c) => {
      const x = c.shape(0);
      return x ? [product(x)] : undefined;
    },
  },
  NonZero: { shapes: (c) => [[c.shape(0)?.length ?? null, null]], types: () => ['int64'] },
  Expand: {
    shapes: (c) => {
      const [x, target] = [c.shape(0), c.value(1)];
      if (target) return [broadcast([x, target], c.node.name)];
      // A target computed at run time (e.g. from the batch size) still fixes the rank: its own length.
      const len = c.shape(1)?.[0];
      return [typeof len === 'number' && x && len >= x.length ? Array<SDim>(len).fill(null) : undefined];
    },
  },
  ConstantOfShape: {
    shapes: (c) => [c.value(0)],
    types: (c) => {
      const v = c.node.attrs.value as { dtype?: string } | undefined;
      return [v?.dtype ? TENSOR_TYPES[v.dtype] : 'float32'];
    },
  },
  Range: {
    shapes: (c) => {
      const [start, limit, delta] = [0, 1, 2].map((i) => c.value(i)?.[0]);
      return [[delta === 1 && start !== undefined && limit !== undefined ? sliceLength(limit, start, limit) : null]];
    },
  },
};

/** Every fact the interpreter found; a value missing from a map is not known. */
export interface GraphFacts {
  shapes: Map<string, SShape>;
  values: Map<string, SValue>;
  types: Map<string, ElemType | undefined>;
  /** FLOPs of each node, in g.nodes order (0 for an op that is not counted, null where shapes are missing). */
  flops: SDim[];
  /** Nodes whose op has no rule: their outputs' shapes are unknown. */
  unknown: Node[];
}

/** The contents of a small numeric initializer (integer or float). */
function constantValue(g: GraphBuilder, name: string): SValue {
  const t = g.initializers.get(name);
  if (
    !t ||
    t.shape.length > 1 ||
    t.data.length > MAX_TRACKED ||
    (t.dtype !== 'I64' && t.dtype !== 'I32' && t.dtype !== 'F32')
  )
    return undefined;
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

/**
 * Interpret `g` statically. `inputShapes` replaces the declared shapes of graph inputs, e.g. concrete sizes for a
 * FLOP count.
 */
export function interpret(g: GraphBuilder, inputShapes: Record<string, Dim[]> = {}): GraphFacts {
  const shapes = new Map<string, SShape>();
  const values = new Map<string, SValue>();
  const types = new Map<string, ElemType | undefined>();
  for (const v of g.inputs) {
    shapes.set(v.name, [...(inputShapes[v.name] ?? v.shape)]);
    types.set(v.name, v.type);
  }
  for (const [name, t] of g.initializers) {
    shapes.set(name, [...t.shape]);
    types.set(name, TENSOR_TYPES[t.dtype]);
    const v = constantValue(g, name);
    if (v) values.set(name, v);
  }
  const flops: SDim[] = [];
  const unknown: Node[] = [];
  for (const n of g.nodes) {
    const input = (i: number) => n.inputs[i] || undefined;
    const c: OpContext = {
      node: n,
      shape: (i) => shapes.get(input(i) ?? ''),
      value: (i) => values.get(input(i) ?? ''),
      type: (i) => types.get(input(i) ?? ''),
      numbers: (i) => {
        const v = values.get(input(i) ?? '');
        return v?.every((d) => typeof d === 'number') ? (v as number[]) : undefined;
      },
      int: (name, fallback) => (n.attrs[name] as number | undefined) ?? fallback,
      attr: <T>(name: string) => n.attrs[name] as T | undefined,
    };
    const rule = OPS[n.op];
    if (!rule) unknown.push(n);
    const outShapes = rule?.shapes
      ? rule.shapes(c)
      : n.outputs.map((_, i) => (rule && i === 0 ? c.shape(0) : undefined));
    const outTypes = rule?.types?.(c) ?? n.outputs.map(() => c.type(0));
    n.outputs.forEach((o, i) => {
      shapes.set(o, outShapes[i]);
      types.set(o, outTypes[i]);
    });
    const s = outShapes[0];
    const small = s && s.length <= 1 && (s.length === 0 || (typeof s[0] === 'number' && s[0] <= MAX_TRACKED));
    const v = small ? rule?.value?.(c) : undefined;
    if (v) values.set(n.outputs[0], v);
    flops.push(rule?.flops ? rule.flops(c, outShapes) : 0);
  }
  return { shapes, values, types, flops, unknown };
}

/** The values of a constant integer initializer, or undefined when the value is computed at run time. */
export function constInts(g: GraphBuilder, name: string | undefined): number[] | undefined {
  const t = name ? g.initializers.get(name) : undefined;
  if (!t || (t.dtype !== 'I64' && t.dtype !== 'I32')) return undefined;
  return Array.from(t.data as BigInt64Array | Int32Array, Number);
}
