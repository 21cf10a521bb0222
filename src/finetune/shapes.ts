import type { GraphBuilder, Node } from '../onnx/graph.js';

/**
 * Static shape inference over the graph IR, as far as the graph allows: enough for the gradient builder to pick
 * reduction axes and transposes at build time. A dim is a number, a symbolic name (same name = same size), or null
 * when unknown; a whole shape is undefined when not even the rank is known.
 */
export type SDim = number | string | null;
export type SShape = SDim[] | undefined;

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
  'Identity', 'Cast', 'Sigmoid', 'Tanh', 'Erf', 'Exp', 'Log', 'Sqrt', 'Neg', 'Relu', 'Reciprocal', 'Abs', 'Softmax',
  'LogSoftmax', 'LayerNormalization', 'InstanceNormalization', 'Trilu', 'Dropout', 'Floor', 'Ceil', 'Round', 'Sign', 'Not',
]);
const BROADCASTING = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Where', 'Max', 'Min', 'And', 'Or', 'Sum']);

function infer(g: GraphBuilder, n: Node, shape: (v: string) => SShape): SShape[] {
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
      const target = constInts(g, n.inputs[1]);
      if (!target) return [undefined];
      return [target.map((d, i) => (d === 0 ? (x?.[i] ?? null) : d === -1 ? null : d))];
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
      const axes = constInts(g, n.inputs[1]);
      if (!x || !axes) return [undefined];
      const set = new Set(axes.map((ax) => normAxis(ax, x.length)));
      return [x.filter((_, i) => !set.has(i))];
    }
    case 'Flatten': {
      if (!x) return [undefined];
      return [[null, null]];
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
      const sizes = all.map((s) => s![ax]);
      out[ax] = sizes.every((d) => typeof d === 'number') ? (sizes as number[]).reduce((p, q) => p + q, 0) : null;
      return [out];
    }
    case 'Slice': {
      if (!x) return [undefined];
      const axes = constInts(g, n.inputs[3]) ?? constInts(g, n.inputs[1])?.map((_, i) => i);
      if (!axes) return [x.map(() => null)];
      const starts = constInts(g, n.inputs[1]);
      const ends = constInts(g, n.inputs[2]);
      const steps = n.inputs[4] ? constInts(g, n.inputs[4]) : undefined;
      const out: SDim[] = [...x];
      axes.forEach((ax, k) => {
        const i = normAxis(ax, x.length);
        const d = x[i];
        // With constant bounds on a known dim the slice's length is known too (e.g. the batch entry of a Shape).
        if (typeof d === 'number' && starts && ends && (!steps || steps[k] === 1)) {
          const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
          out[i] = Math.max(clamp(ends[k]) - clamp(starts[k]), 0);
        } else out[i] = null;
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
    case 'Shape':
      return [x ? [x.length] : [null]];
    case 'Size':
      return [[]];
    case 'Expand': {
      const target = constInts(g, n.inputs[1]);
      if (target) return [broadcast([x, target])];
      // A target computed at run time (e.g. from the batch size) still fixes the rank: its own length.
      const len = shape(n.inputs[1]);
      return [len && typeof len[0] === 'number' && x && len[0] >= x.length ? Array(len[0]).fill(null) : undefined];
    }
    case 'ConstantOfShape': {
      const target = constInts(g, n.inputs[0]);
      return [target ?? undefined];
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
  for (const v of g.inputs) shapes.set(v.name, [...v.shape]);
  for (const [name, t] of g.initializers) shapes.set(name, [...t.shape]);
  const get = (v: string) => shapes.get(v);
  for (const n of g.nodes) {
    const out = infer(g, n, get);
    n.outputs.forEach((o, i) => shapes.set(o, out[i]));
  }
  return shapes;
}
