import type { F32Tensor } from '../core/tensor.js';
import type { ElemType, GraphBuilder, Node } from '../onnx/graph.js';
import { GRADIENT_RULES, rowChunks, type GradContext } from './grad-rules.js';
import { constInts, interpret, type SShape } from '../onnx/interpret.js';

/**
 * Reverse-mode differentiation over the graph IR: the backward pass is appended to the same builder, so one ONNX
 * graph computes the forward pass, the loss and the gradients in a single onnxruntime run.
 */

/**
 * Float ops whose outputs still carry no gradient (piecewise constant, random, or made from a shape alone). Integer
 * and boolean outputs carry none either: the graph interpreter's element types say which those are.
 */
const NO_GRADIENT = new Set([
  'ConstantOfShape',
  'Range',
  'EyeLike',
  'Floor',
  'Ceil',
  'Round',
  'Sign',
  'OneHot',
  'RandomNormal',
  'RandomUniform',
  'RandomNormalLike',
  'RandomUniformLike',
  'Bernoulli',
]);

/** Gradients flow in float32 only; an op the interpreter does not type is tried, so that a missing rule shows. */
function producesGradient(n: Node, types: Map<string, ElemType | undefined>): boolean {
  if (NO_GRADIENT.has(n.op)) return false;
  return n.outputs.some((o) => (types.get(o) ?? 'float32') === 'float32');
}

/**
 * Turn initializers into graph inputs so the caller can feed (and update) them every step; returns their current
 * values, which the caller now owns. Names are kept, so checkpoint keys still name the parameters.
 */
export function promoteToInputs(g: GraphBuilder, names: string[]): Map<string, F32Tensor> {
  const values = new Map<string, F32Tensor>();
  for (const name of names) {
    const t = g.initializers.get(name);
    if (!t) throw new Error(`promoteToInputs: ${name} is not an initializer of the graph`);
    if (t.dtype !== 'F32')
      throw new Error(`promoteToInputs: ${name} is ${t.dtype}; trainable parameters must be float32`);
    g.initializers.delete(name);
    g.inputs.push({ name, type: 'float32', shape: [...t.shape] });
    values.set(name, t as F32Tensor);
  }
  return values;
}

/**
 * The gradient of a parameter that only an axis-0 Gather reads (an embedding table): zero outside the gathered rows,
 * so it is given as those rows' indices [N] and their gradients [N, ...row shape] (rows may repeat; their gradients
 * add up). A dense gradient would be a table-sized tensor of zeros, filled, scattered into and copied out each step:
 * 49,408 x 768 floats for CLIP ViT-L, against the batch's 77 x batch rows.
 */
export interface RowsGradient {
  rows: string;
  values: string;
}
export type GradientValue = string | RowsGradient;

/**
 * Expose each gradient as graph outputs: `grad:<param>`, or `grad:<param>:rows` and `grad:<param>:values`; returns
 * param name -> output name(s).
 */
export function exposeGradients<T extends GradientValue>(
  g: GraphBuilder,
  grads: Map<string, T>,
  shapes: Map<string, number[]>,
): Map<string, T> {
  const out = new Map<string, T>();
  for (const [param, grad] of grads) {
    const shape = shapes.get(param);
    if (!shape) throw new Error(`exposeGradients: no shape given for ${param}`);
    if (typeof grad === 'string') {
      out.set(param, g.output(grad, `grad:${param}`, 'float32', shape) as T);
    } else {
      const rows = g.output(grad.rows, `grad:${param}:rows`, 'int64', ['rows']);
      const values = g.output(grad.values, `grad:${param}:values`, 'float32', ['rows', ...shape.slice(1)]);
      out.set(param, { rows, values } as T);
    }
  }
  return out;
}

/**
 * Append the backward pass of `loss` with respect to `wrt` (graph inputs or any float values) to `g`.
 * Returns, for each name in `wrt`, the value holding d(sum of loss)/d(name) — zeros for names the loss ignores.
 * Only nodes that both depend on `wrt` and lead to `loss` are differentiated; an op without a rule there is an error.
 */
export function buildGradients(g: GraphBuilder, loss: string, wrt: string[]): Map<string, string>;
/** With `rows`: parameters that only axis-0 Gathers read get their gradient as a RowsGradient. */
export function buildGradients(
  g: GraphBuilder,
  loss: string,
  wrt: string[],
  opts: { rows: true },
): Map<string, GradientValue>;
export function buildGradients(
  g: GraphBuilder,
  loss: string,
  wrt: string[],
  opts: { rows?: boolean } = {},
): Map<string, GradientValue> {
  const nodes = [...g.nodes];
  const { shapes, types } = interpret(g);
  // Parameters whose gradient comes as rows: their one reader (an axis-0 Gather) and the shape of a row.
  const gathered = new Map<Node, { table: string; width: number[] }>();
  if (opts.rows) {
    for (const w of wrt) {
      const users = nodes.filter((n) => n.inputs.includes(w));
      const [u] = users;
      const width = shapes.get(w)?.slice(1);
      if (users.length !== 1 || u.op !== 'Gather' || u.inputs[0] !== w || u.attrs.axis) continue;
      if (width?.every((d) => typeof d === 'number')) gathered.set(u, { table: w, width: width as number[] });
    }
  }
  const rowTables = new Map([...gathered.values()].map((r) => [r.table, r.width]));

  const depends = new Set(wrt);
  for (const n of nodes) {
    if (producesGradient(n, types) && n.inputs.some((i) => depends.has(i))) for (const o of n.outputs) depends.add(o);
  }
  const leadsToLoss = new Set([loss]);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (n.outputs.some((o) => leadsToLoss.has(o))) for (const v of n.inputs) if (v) leadsToLoss.add(v);
  }

  const passesBack = (o: string) => depends.has(o) && leadsToLoss.has(o);
  const contributions = new Map<string, string[]>();
  const gradOf = (v: string): string | undefined => {
    const parts = contributions.get(v);
    if (!parts || parts.length === 0) return undefined;
    if (parts.length > 1) contributions.set(v, [g.op('Sum', parts, {}, { name: `grad/${v}` })]);
    return contributions.get(v)![0];
  };
  const lossShape = shapes.get(loss);
  const seed =
    lossShape && lossShape.length === 0
      ? g.scalarF32(1)
      : g.op('Expand', [g.scalarF32(1), g.op('Shape', [loss])], {}, { name: 'grad/seed' });
  contributions.set(loss, [seed]);
  const sparse = new Map<string, RowsGradient>();

  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!producesGradient(n, types)) continue;
    const needs = n.inputs.map((v) => Boolean(v) && depends.has(v) && leadsToLoss.has(v));
    if (!needs.some(Boolean)) continue;
    const dys = n.outputs.map((o) => (depends.has(o) ? gradOf(o) : undefined));
    if (dys.every((d) => d === undefined)) continue;
    const gather = gathered.get(n);
    if (gather) {
      const { table, width } = gather;
      const rows = g.op('Reshape', [n.inputs[1], g.constI64([-1])], {}, { name: `grad/${n.name}` });
      const values = g.op('Reshape', [dys[0]!, g.constI64([-1, ...width])], {}, { name: `grad/${n.name}` });
      sparse.set(table, { rows, values });
      continue;
    }
    const rule = GRADIENT_RULES[n.op];
    if (!rule)
      throw new Error(
        `autodiff: no gradient rule for op ${n.op} (node ${n.name}), which lies on the path from ` +
          `[${wrt.join(', ')}] to ${loss}`,
      );
    const ctx = context(g, n, dys, needs, shapes, {
      gradient: gradOf,
      users: (v) =>
        nodes.filter((u) => u.inputs.includes(v) && producesGradient(u, types) && u.outputs.some(passesBack)),
    });
    const grads = rule(ctx);
    grads.forEach((gr, k) => {
      if (!gr || !needs[k]) return;
      const v = n.inputs[k];
      contributions.set(v, [...(contributions.get(v) ?? []), gr]);
    });
  }

  const result = new Map<string, GradientValue>();
  for (const w of wrt) {
    const width = rowTables.get(w);
    if (width) {
      const rowsGrad = sparse.get(w);
      const none = () => ({
        rows: g.constant({ dtype: 'I64', shape: [0], data: new BigInt64Array(0) }, `grad/${w}/no_rows`),
        values: g.constant({ dtype: 'F32', shape: [0, ...width], data: new Float32Array(0) }, `grad/${w}/no_rows`),
      });
      result.set(w, rowsGrad ?? none());
      continue;
    }
    const grad = gradOf(w);
    result.set(w, grad ?? g.op('ConstantOfShape', [g.op('Shape', [w])], {}, { name: `grad/${w}/zeros` }));
  }
  return result;
}

function context(
  g: GraphBuilder,
  node: Node,
  dys: (string | undefined)[],
  needs: boolean[],
  shapes: Map<string, SShape>,
  around: Pick<GradContext, 'gradient' | 'users'>,
): GradContext {
  const name = `grad/${node.name}`;
  const shape = (v: string): SShape => shapes.get(v);
  const rank = (v: string): number => {
    const s = shapes.get(v);
    if (!s)
      throw new Error(`autodiff: ${node.op} node ${node.name} needs the rank of ${v}, which is not known statically`);
    return s.length;
  };
  const op = (type: string, inputs: string[], attrs = {}) => g.op(type, inputs, attrs, { name });
  return {
    g,
    node,
    name,
    dy: (i = 0) => dys[i],
    needs: (i) => needs[i] ?? false,
    shape,
    rank,
    ints: (v) => constInts(g, v),
    op,
    sumTo: (grad, from, target) => sumTo(g, name, grad, from, target, shapes.get(target)),
    ...around,
  };
}

/**
 * Sum a broadcast gradient back to the shape of the operand it flows to. The axes are picked at build time when
 * the shapes say which dims were broadcast; otherwise they are computed at run time from the two shapes.
 */
function sumTo(g: GraphBuilder, name: string, grad: string, from: SShape, target: string, to: SShape): string {
  const op = (type: string, inputs: string[], attrs = {}) => g.op(type, inputs, attrs, { name });
  const axes = staticBroadcastAxes(from, to);
  if (axes) {
    if (axes.length === 0) return grad;
    const lead = from!.length - to!.length;
    if (axes.length === lead && to!.every((d) => typeof d === 'number'))
      return sumLeading(g, name, grad, to as number[], rowChunks(from!.slice(0, lead)));
    if (axes.length === lead) return op('ReduceSum', [grad, g.constI64(axes)], { keepdims: 0 });
    const summed = op('ReduceSum', [grad, g.constI64(axes)], { keepdims: 1 });
    return lead === 0 ? summed : op('Squeeze', [summed, g.constI64(Array.from({ length: lead }, (_, i) => i))]);
  }
  // Run time: pad the target shape with leading ones, reduce every axis where it differs from the gradient's.
  const gs = op('Shape', [grad]);
  const ts = op('Shape', [target]);
  const ones = op('ConstantOfShape', [op('Sub', [op('Shape', [gs]), op('Shape', [ts])])], {
    value: { dtype: 'I64', shape: [1], data: BigInt64Array.from([1n]) },
  });
  const padded = op('Concat', [ones, ts], { axis: 0 });
  const diff = op('NonZero', [op('Not', [op('Equal', [padded, gs])])]);
  const summed = op('ReduceSum', [grad, op('Reshape', [diff, g.constI64([-1])])], {
    keepdims: 1,
    noop_with_empty_axes: 1,
  });
  return op('Reshape', [summed, ts]);
}

/**
 * Sum over the leading axes down to a constant trailing shape (a bias or norm-scale gradient) as ones[1, N] times
 * grad[N, D]: onnxruntime's GEMM does this 1.5-4x faster than ReduceSum over the leading axes of a [B, S, D] tensor;
 * with `chunks`, as a batched product over that many chunks of the rows, summed (see rowChunks).
 */
function sumLeading(g: GraphBuilder, name: string, grad: string, to: number[], chunks?: number): string {
  const op = (type: string, inputs: string[], attrs = {}) => g.op(type, inputs, attrs, { name });
  const width = to.reduce((a, b) => a * b, 1);
  const rows = chunks
    ? op('Reshape', [grad, g.constI64([chunks, -1, width])])
    : op('Reshape', [grad, g.constI64([-1, width])]);
  const axis = chunks ? 1 : 0;
  const count = op('Shape', [rows], { start: axis, end: axis + 1 });
  const ones = op('ConstantOfShape', [op('Concat', [g.constI64([1]), count], { axis: 0 })], {
    value: { dtype: 'F32', shape: [1], data: Float32Array.from([1]) },
  });
  const summed = g.matmul(ones, rows, name);
  return op('Reshape', [chunks ? op('ReduceSum', [summed, g.constI64([0])], { keepdims: 0 }) : summed, g.constI64(to)]);
}

/** Broadcast axes of `to` inside `from`, or undefined when the shapes leave it open. */
function staticBroadcastAxes(from: SShape, to: SShape): number[] | undefined {
  if (!from || !to || to.length > from.length) return undefined;
  const lead = from.length - to.length;
  const axes = Array.from({ length: lead }, (_, i) => i);
  for (let i = 0; i < to.length; i++) {
    const t = to[i];
    const f = from[lead + i];
    if (t === 1) {
      if (f !== 1) axes.push(lead + i);
    } else if (t === null || (typeof t === 'string' && f !== t)) {
      return undefined;
    }
  }
  return axes;
}
