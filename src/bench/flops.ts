import type { GraphBuilder, Node } from '../onnx/graph.js';
import { numel } from '../core/tensor.js';

/**
 * Analytic FLOP count of a GraphBuilder graph at concrete input shapes: a small shape interpreter over the ops the
 * project's models use (int shape tensors are evaluated so Reshape/Expand/Resize know their targets), counting
 * 2 FLOPs per multiply-add in Conv, MatMul and Gemm. Element-wise ops are left out: they are a few per mille of a
 * UNet and no GEMM reference measures them. An op it does not know is an error, never a silent zero.
 */
export interface FlopCount {
  total: number;
  byOp: Record<string, number>;
}

type Shapes = Map<string, number[]>;
type Ints = Map<string, number[]>;

function broadcast(a: number[], b: number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`cannot broadcast [${a}] with [${b}]`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

const axis = (a: number, rank: number) => (a < 0 ? a + rank : a);

function sliceRange(dim: number, start: number, end: number): number {
  const s = Math.min(Math.max(start < 0 ? start + dim : start, 0), dim);
  const e = Math.min(Math.max(end < 0 ? end + dim : end, 0), dim);
  return Math.max(e - s, 0);
}

export function countFlops(g: GraphBuilder, inputShapes: Record<string, number[]>): FlopCount {
  const shapes: Shapes = new Map();
  const ints: Ints = new Map();
  for (const v of g.inputs) {
    const s = inputShapes[v.name] ?? v.shape.map((d) => (typeof d === 'number' ? d : NaN));
    if (s.some(Number.isNaN)) throw new Error(`input ${v.name}: give a concrete shape`);
    shapes.set(v.name, s);
  }
  for (const [name, t] of g.initializers) {
    shapes.set(name, t.shape);
    if (t.dtype === 'I64') ints.set(name, Array.from(t.data as BigInt64Array, Number));
  }
  const byOp: Record<string, number> = {};
  let total = 0;
  const charge = (op: string, f: number) => {
    byOp[op] = (byOp[op] ?? 0) + f;
    total += f;
  };
  for (const n of g.nodes) {
    const out = inferNode(n, shapes, ints, charge);
    out.forEach((s, i) => shapes.set(n.outputs[i], s));
  }
  return { total, byOp };
}

function inferNode(n: Node, shapes: Shapes, ints: Ints, charge: (op: string, f: number) => void): number[][] {
  const sh = (i: number) => {
    const s = shapes.get(n.inputs[i]);
    if (!s) throw new Error(`${n.name}: no shape for input ${n.inputs[i]}`);
    return s;
  };
  const iv = (i: number) => {
    const v = ints.get(n.inputs[i]);
    if (!v) throw new Error(`${n.name}: input ${n.inputs[i]} is not a known integer tensor`);
    return v;
  };
  const a = n.attrs;
  switch (n.op) {
    case 'Conv': {
      const [N, , H, W] = sh(0);
      const [Co, Cig, kh, kw] = sh(1);
      const pads = (a.pads as number[]) ?? [0, 0, 0, 0];
      const st = (a.strides as number[]) ?? [1, 1];
      const Ho = Math.floor((H + pads[0] + pads[2] - kh) / st[0]) + 1;
      const Wo = Math.floor((W + pads[1] + pads[3] - kw) / st[1]) + 1;
      charge('Conv', 2 * N * Co * Ho * Wo * Cig * kh * kw);
      return [[N, Co, Ho, Wo]];
    }
    case 'MatMul': {
      const x = sh(0);
      const w = sh(1);
      const batch = broadcast(x.slice(0, -2), w.slice(0, -2));
      const [M, K] = x.slice(-2);
      const Nn = w[w.length - 1];
      charge('MatMul', 2 * numel(batch) * M * K * Nn);
      return [[...batch, M, Nn]];
    }
    case 'MultiHeadAttention': {
      const [B, S, D] = sh(0);
      const L = sh(1)[1];
      charge('MultiHeadAttention', 2 * 2 * B * S * L * D);
      return [[B, S, sh(2)[2]]];
    }
    case 'Add':
    case 'Mul':
    case 'Sub':
    case 'Div':
    case 'Pow':
    case 'Equal':
    case 'Where': {
      let s = sh(0);
      for (let i = 1; i < n.inputs.length; i++) s = broadcast(s, sh(i));
      const x = ints.get(n.inputs[0]);
      const y = ints.get(n.inputs[1]);
      if (x && y && n.op !== 'Where' && s.length <= 1) {
        const f = { Add: (p: number, q: number) => p + q, Mul: (p: number, q: number) => p * q, Sub: (p: number, q: number) => p - q, Div: (p: number, q: number) => Math.trunc(p / q) }[n.op as 'Add'];
        if (f) ints.set(n.outputs[0], Array.from({ length: numel(s) }, (_, i) => f(x[x.length === 1 ? 0 : i], y[y.length === 1 ? 0 : i])));
      }
      return [s];
    }
    case 'Sigmoid':
    case 'Tanh':
    case 'Erf':
    case 'Sin':
    case 'Cos':
    case 'Exp':
    case 'Sqrt':
    case 'Neg':
    case 'Identity':
    case 'Softmax':
    case 'Clip':
    case 'Cast':
    case 'LayerNormalization':
    case 'InstanceNormalization':
    case 'GroupNormalization':
      if (n.op === 'Identity' && ints.has(n.inputs[0])) ints.set(n.outputs[0], ints.get(n.inputs[0])!);
      return [sh(0)];
    case 'Shape': {
      const s = sh(0);
      const start = axis((a.start as number) ?? 0, s.length);
      const end = a.end === undefined ? s.length : axis(a.end as number, s.length);
      const v = s.slice(start, end);
      ints.set(n.outputs[0], v);
      return [[v.length]];
    }
    case 'Concat': {
      const parts = n.inputs.map((_, i) => sh(i));
      const ax = axis(a.axis as number, parts[0].length);
      const s = [...parts[0]];
      s[ax] = parts.reduce((t, p) => t + p[ax], 0);
      if (parts[0].length === 1 && n.inputs.every((x) => ints.has(x))) ints.set(n.outputs[0], n.inputs.flatMap((x) => ints.get(x)!));
      return [s];
    }
    case 'Reshape': {
      const s = sh(0);
      const target = iv(1).map((d, i) => (d === 0 ? s[i] : d));
      const known = target.filter((d) => d !== -1).reduce((p, d) => p * d, 1);
      return [target.map((d) => (d === -1 ? numel(s) / known : d))];
    }
    case 'Transpose': {
      const s = sh(0);
      const perm = (a.perm as number[]) ?? s.map((_, i) => s.length - 1 - i);
      return [perm.map((p) => s[p])];
    }
    case 'Unsqueeze': {
      const s = [...sh(0)];
      const axes = iv(1).map((x) => axis(x, s.length + iv(1).length)).sort((p, q) => p - q);
      for (const x of axes) s.splice(x, 0, 1);
      return [s];
    }
    case 'Expand':
      return [broadcast(sh(0), iv(1))];
    case 'Split': {
      const s = sh(0);
      const ax = axis(a.axis as number, s.length);
      return iv(1).map((len) => s.map((d, i) => (i === ax ? len : d)));
    }
    case 'Slice': {
      const s = [...sh(0)];
      const starts = iv(1);
      const ends = iv(2);
      const axes = n.inputs[3] ? iv(3) : starts.map((_, i) => i);
      axes.forEach((x, i) => (s[axis(x, s.length)] = sliceRange(s[axis(x, s.length)], starts[i], ends[i])));
      const v = ints.get(n.inputs[0]);
      if (v && s.length === 1) ints.set(n.outputs[0], v.slice(starts[0] < 0 ? starts[0] + v.length : starts[0], Math.min(ends[0], v.length)));
      return [s];
    }
    case 'Pad': {
      const s = sh(0);
      const p = iv(1);
      return [s.map((d, i) => d + p[i] + p[i + s.length])];
    }
    case 'Resize': {
      if (n.inputs[3]) return [iv(3)];
      const scales = ints.get(n.inputs[2]);
      if (!scales) throw new Error(`${n.name}: Resize by float scales is not counted`);
      return [sh(0).map((d, i) => d * scales[i])];
    }
    case 'Gather': {
      const data = sh(0);
      const idx = sh(1);
      const ax = axis((a.axis as number) ?? 0, data.length);
      return [[...data.slice(0, ax), ...idx, ...data.slice(ax + 1)]];
    }
    default:
      throw new Error(`countFlops: no shape rule for ${n.op} (node ${n.name})`);
  }
}
