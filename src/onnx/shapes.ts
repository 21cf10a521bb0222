import type { GraphBuilder, Node } from './graph.js';
import { addSize, divSizeExact, mulSize, subSize, type Size } from './sym-dims.js';

/**
 * Static shape inference over the graph IR, as far as the graph allows: enough for the gradient builder to pick
 * reduction axes and transposes at build time. A dim is a number, a symbolic size (a polynomial over the graph's
 * named dims in canonical form, see sym-dims.ts: same string = same size), or null when unknown; a whole shape is
 * undefined when not even the rank is known. The contents of small integer tensors (shapes, sizes, slice bounds
 * computed from `Shape`) are tracked too, so a Reshape or Slice whose target is computed at run time still has a
 * known result shape.
 */
export type SDim = number | string | null;
export type SShape = SDim[] | undefined;
/** Element by element contents of a small integer tensor (rank 0 or 1), or undefined when not known. */
type SValue = SDim[] | undefined;

/** Integer tensors longer than this are not tracked: shape arithmetic only ever handles a few sizes. */
const MAX_TRACKED = 16;
/** Slice ends at or above this mean "to the end of the axis" (INT_MAX and INT64_MAX in exporters' graphs). */
const TO_END = 2 ** 31 - 1;

/** The values of a constant int64 initializer, or undefined when the value is computed at run time. */
export function constInts(g: GraphBuilder, name: string | undefined): number[] | undefined {
  if (!name) return undefined;
  const t = g.initializers.get(name);
  if (!t || (t.dtype !== 'I64' && t.dtype !== 'I32')) return undefined;
  return Array.from(t.data as BigInt64Array | Int32Array, Number);
}

const normAxis = (a: number, rank: number) => (a < 0 ? a + rank : a);

function broadcast(shapes: SShape[]): SShape {
  if (shapes.some((s) => s === undefined)) return undefined;
  const ss = shapes as SDim[][];
  const rank = Math.max(...ss.map((s) => s.length));
  const out: SDim[] = [];
  for (let i = 0; i < rank; i++) {
    const dims = ss.map((s) => s[s.length - rank + i]).filter((d) => d !== undefined && d !== 1);
    if (dims.length === 0) out.push(1);
    else if (dims.some((d) => typeof d === 'number')) out.push(dims.find((d) => typeof d === 'number')!);
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

const SAME_AS_FIRST = new Set([
  'Identity', 'Cast', 'Sigmoid', 'QuickGelu', 'Tanh', 'Erf', 'Exp', 'Log', 'Sqrt', 'Neg', 'Relu', 'Reciprocal', 'Abs', 'Softmax',
  'LogSoftmax', 'LayerNormalization', 'InstanceNormalization', 'Trilu', 'Dropout', 'Floor', 'Ceil', 'Round', 'Sign', 'Not',
]);
const BROADCASTING = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Where', 'Max', 'Min', 'And', 'Or', 'Sum']);

const known = (d: SDim): d is Size => d !== null;

/** Product of sizes, or null when one is unknown. */
function product(dims: SDim[]): SDim {
  let p: Size = 1;
  for (const d of dims) {
    if (!known(d)) return null;
    p = mulSize(p, d);
  }
  return p;
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

function elementwise(op: string, a: SValue, b: SValue): SValue {
  if (!a || !b || (a.length !== b.length && a.length !== 1 && b.length !== 1)) return undefined;
  const f = { Add: addSize, Sub: subSize, Mul: mulSize, Div: divSizeExact }[op];
  if (!f) return undefined;
  return Array.from({ length: Math.max(a.length, b.length) }, (_, i) => {
    const [x, y] = [a[a.length === 1 ? 0 : i], b[b.length === 1 ? 0 : i]];
    return known(x) && known(y) ? (f(x, y) ?? null) : null;
  });
}

/** The contents of the integer outputs of n, where the inputs' contents or shapes determine them. */
function inferValue(g: GraphBuilder, n: Node, shape: (v: string) => SShape, value: (v: string) => SValue): SValue {
  const x = value(n.inputs[0]);
  const a = n.attrs;
  switch (n.op) {
    case 'Shape': {
      const s = shape(n.inputs[0]);
      return s?.slice((a.start as number | undefined) ?? 0, (a.end as number | undefined) ?? s.length);
    }
    case 'Identity':
    case 'Unsqueeze':
    case 'Squeeze':
    case 'Reshape':
    case 'Cast':
      return n.op === 'Cast' && a.to === 1 ? undefined : x;
    case 'Concat': {
      const parts = n.inputs.map(value);
      return parts.every((p) => p) ? parts.flatMap((p) => p!) : undefined;
    }
    case 'Gather': {
      const idx = value(n.inputs[1]);
      if (!x || !idx || ((a.axis as number | undefined) ?? 0) !== 0) return undefined;
      return idx.map((i) => (typeof i === 'number' ? (x[i < 0 ? i + x.length : i] ?? null) : null));
    }
    case 'Slice': {
      const [starts, ends] = [constInts(g, n.inputs[1]), constInts(g, n.inputs[2])];
      const axes = n.inputs[3] ? constInts(g, n.inputs[3]) : [0];
      const steps = n.inputs[4] ? constInts(g, n.inputs[4]) : [1];
      if (!x || !starts || !ends || axes?.[0] !== 0 || steps?.[0] !== 1) return undefined;
      return x.slice(starts[0], ends[0]);
    }
    case 'Add':
    case 'Sub':
    case 'Mul':
    case 'Div':
      return elementwise(n.op, x, value(n.inputs[1]));
    default:
      return undefined;
  }
}

function infer(g: GraphBuilder, n: Node, shape: (v: string) => SShape, value: (v: string) => SValue): SShape[] {
  const x = shape(n.inputs[0]);
  const a = n.attrs;
  if (SAME_AS_FIRST.has(n.op)) return [x];
  if (BROADCASTING.has(n.op)) return [broadcast(n.inputs.map(shape))];
  switch (n.op) {
    case 'MatMul': {
      const b = shape(n.inputs[1]);
      if (!x || !b || x.length < 2 || b.length < 2) return [undefined];
      const batch = broadcast([x.slice(0, -2), b.slice(0, -2)])!;
      return [[...batch, x[x.length - 2], b[b.length - 1]]];
    }
    case 'Gemm': {
      const b = shape(n.inputs[1]);
      if (!x || !b) return [undefined];
      return [[a.transA ? x[1] : x[0], a.transB ? b[0] : b[1]]];
    }
    case 'Transpose': {
      if (!x) return [undefined];
      const perm = (a.perm as number[] | undefined) ?? x.map((_, i) => x.length - 1 - i);
      return [perm.map((p) => x[p])];
    }
    case 'Reshape': {
      const target = value(n.inputs[1]);
      if (!target) {
        const len = shape(n.inputs[1])?.[0];
        return [typeof len === 'number' ? Array<SDim>(len).fill(null) : undefined];
      }
      const dims = target.map((d, i) => (d === 0 && !a.allowzero ? (x?.[i] ?? null) : d));
      const free = dims.indexOf(-1);
      if (free >= 0) {
        const total = x ? product(x) : null;
        const rest = product(dims.filter((_, i) => i !== free));
        dims[free] = known(total) && known(rest) ? (divSizeExact(total, rest) ?? null) : null;
      }
      return [dims];
    }
    case 'Unsqueeze': {
      const axes = constInts(g, n.inputs[1]);
      if (!x || !axes) return [undefined];
      const rank = x.length + axes.length;
      const set = new Set(axes.map((ax) => normAxis(ax, rank)));
      const out: SDim[] = [];
      let j = 0;
      for (let i = 0; i < rank; i++) out.push(set.has(i) ? 1 : x[j++]);
      return [out];
    }
    case 'Squeeze': {
      if (x && !n.inputs[1] && x.every((d) => typeof d === 'number')) return [x.filter((d) => d !== 1)];
      const axes = constInts(g, n.inputs[1]);
      if (!x || !axes) return [undefined];
      const set = new Set(axes.map((ax) => normAxis(ax, x.length)));
      return [x.filter((_, i) => !set.has(i))];
    }
    case 'Flatten': {
      if (!x) return [undefined];
      const axis = normAxis((a.axis as number | undefined) ?? 1, x.length);
      return [[product(x.slice(0, axis)), product(x.slice(axis))]];
    }
    case 'Gather': {
      const idx = shape(n.inputs[1]);
      if (!x || !idx) return [undefined];
      const ax = normAxis((a.axis as number) ?? 0, x.length);
      return [[...x.slice(0, ax), ...idx, ...x.slice(ax + 1)]];
    }
    case 'GatherElements':
      return [shape(n.inputs[1])];
    case 'Concat': {
      const all = n.inputs.map(shape);
      if (all.some((s) => !s)) return [undefined];
      const rank = all[0]!.length;
      const ax = normAxis(a.axis as number, rank);
      const out = [...all[0]!];
      out[ax] = all.reduce<SDim>((sum, s) => (known(sum) && known(s![ax]) ? addSize(sum, s![ax]!) : null), 0);
      return [out];
    }
    case 'Slice': {
      if (!x) return [undefined];
      const starts = value(n.inputs[1]);
      const ends = value(n.inputs[2]);
      const axes = n.inputs[3] ? constInts(g, n.inputs[3]) : starts?.map((_, i) => i);
      if (!axes) return [x.map(() => null)];
      const steps = n.inputs[4] ? constInts(g, n.inputs[4]) : undefined;
      const out: SDim[] = [...x];
      axes.forEach((ax, k) => {
        const i = normAxis(ax, x.length);
        out[i] = starts && ends && (!steps || steps[k] === 1) ? sliceLength(x[i], starts[k], ends[k]) : null;
      });
      return [out];
    }
    case 'ReduceSum':
      return [reduced(x, constInts(g, n.inputs[1]), (a.keepdims ?? 1) !== 0)];
    case 'ReduceMean':
    case 'ReduceL2':
    case 'ReduceSumSquare':
    case 'ReduceMax':
    case 'ReduceMin':
    case 'ReduceProd':
      return [reduced(x, a.axes as number[] | undefined, (a.keepdims ?? 1) !== 0)];
    case 'ArgMax':
    case 'ArgMin':
      return [reduced(x, [(a.axis as number) ?? 0], (a.keepdims ?? 1) !== 0)];
    case 'Shape': {
      const v = inferValue(g, n, shape, value);
      return [v ? [v.length] : [null]];
    }
    case 'Size':
      return [[]];
    case 'Expand': {
      const target = value(n.inputs[1]);
      if (target) return [broadcast([x, target])];
      // A target computed at run time (e.g. from the batch size) still fixes the rank: its own length.
      const len = shape(n.inputs[1]);
      return [len && typeof len[0] === 'number' && x && len[0] >= x.length ? Array(len[0]).fill(null) : undefined];
    }
    case 'ConstantOfShape':
      return [value(n.inputs[0])];
    case 'Range': {
      const [start, limit, delta] = n.inputs.map((v) => value(v)?.[0]);
      return [[delta === 1 && start !== undefined && limit !== undefined ? sliceLength(limit, start, limit) : null]];
    }
    case 'Conv': {
      const w = shape(n.inputs[1]);
      if (!x || !w) return [undefined];
      return [[x[0], w[0], ...x.slice(2).map(() => null)]];
    }
    default:
      return n.outputs.map(() => undefined);
  }
}

/** Shapes of every value the graph's inputs, initializers and nodes define, as far as they can be known statically. */
export function inferShapes(g: GraphBuilder): Map<string, SShape> {
  const shapes = new Map<string, SShape>();
  const values = new Map<string, SValue>();
  for (const v of g.inputs) shapes.set(v.name, [...v.shape]);
  for (const [name, t] of g.initializers) {
    shapes.set(name, [...t.shape]);
    if (t.shape.length <= 1 && t.data.length <= MAX_TRACKED) values.set(name, constInts(g, name));
  }
  const shape = (v: string) => shapes.get(v);
  const value = (v: string) => values.get(v);
  for (const n of g.nodes) {
    const out = infer(g, n, shape, value);
    n.outputs.forEach((o, i) => shapes.set(o, out[i]));
    const s = out[0];
    if (n.outputs.length === 1 && s && s.length <= 1 && (s.length === 0 || (typeof s[0] === 'number' && s[0] <= MAX_TRACKED))) {
      values.set(n.outputs[0], inferValue(g, n, shape, value));
    }
  }
  return shapes;
}
