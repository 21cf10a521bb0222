import type * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';
import { numel } from '../core/tensor.js';
import { GraphBuilder } from '../onnx/graph.js';
import { modelProto } from '../onnx/serialize.js';
import { createSession, toOrt } from '../onnx/session.js';

/**
 * Float64 graphs on ORT's CPU kernels: the O(n³) products of the FID linear algebra run there (ORT's DGEMM is two
 * orders of magnitude faster than a JS loop), while the O(n²) bookkeeping stays in JS.
 */

const { onnx } = onnxProto;

/**
 * The graph IR types values as float32 or narrower; these graphs compute in float64, so their float64 inputs and
 * outputs are declared float32 in the builder and retyped here.
 */
export function serializeF64(g: GraphBuilder, f64Values: string[]): Uint8Array {
  const proto = modelProto(g);
  const values = [...(proto.graph!.input ?? []), ...(proto.graph!.output ?? [])] as OnnxTypes.IValueInfoProto[];
  for (const v of values)
    if (f64Values.includes(v.name!)) v.type!.tensorType!.elemType = onnx.TensorProto.DataType.DOUBLE;
  return onnx.ModelProto.encode(proto).finish();
}

const sessions = new Map<string, Promise<ort.InferenceSession>>();

/** The session of the graph named `key`, built and opened on first use and shared by every later call. */
export function f64Session(key: string, build: () => Uint8Array): Promise<ort.InferenceSession> {
  let s = sessions.get(key);
  if (!s) {
    s = createSession(build());
    sessions.set(key, s);
  }
  return s;
}

/**
 * A float64 feed of the first numel(shape) values of `data`, which may be longer (a buffer sized for the largest case).
 */
export function f64(data: Float64Array, shape: number[]): ort.Tensor {
  return toOrt({ dtype: 'F64', shape, data: data.subarray(0, numel(shape)) });
}

export function i64(values: number[]): ort.Tensor {
  return toOrt({ dtype: 'I64', shape: [values.length], data: BigInt64Array.from(values.map(BigInt)) });
}

/** Columns (or rows, by `axis`) [from, to) of x, with the range fed as an int64 [2] input. */
export function sliceRange(g: GraphBuilder, x: string, range: string, axis: number): string {
  const from = g.op('Slice', [range, g.constI64([0]), g.constI64([1])]);
  const to = g.op('Slice', [range, g.constI64([1]), g.constI64([2])]);
  return g.op('Slice', [x, from, to, g.constI64([axis])]);
}

/** a f64 [m, m], p, q f64 [k, m], range i64 [2] = [s, m] → a[s:, s:] − p[:, s:]ᵀ q[:, s:] f64 [m−s, m−s]. */
function trailingUpdateGraph(): Uint8Array {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', ['m', 'm']);
  const p = g.input('p', 'float32', ['k', 'm']);
  const q = g.input('q', 'float32', ['k', 'm']);
  const range = g.input('range', 'int64', [2]);
  const block = sliceRange(g, sliceRange(g, a, range, 0), range, 1);
  const update = g.op('Gemm', [sliceRange(g, p, range, 1), sliceRange(g, q, range, 1), block], {
    transA: 1,
    alpha: -1,
    beta: 1,
  });
  g.output(update, 'out', 'float32', ['t', 't']);
  return serializeF64(g, ['a', 'p', 'q', 'out']);
}

/**
 * The trailing block of a blocked factorisation after its panel: a[s:, s:] − pᵀ q over the columns from s, where
 * the k rows of p and q hold the panel's vectors over all m indices. `a` is m×m, row-major; the result is (m−s)².
 */
export async function trailingUpdate(
  a: Float64Array,
  m: number,
  p: Float64Array,
  q: Float64Array,
  k: number,
  s: number,
): Promise<Float64Array> {
  const session = await f64Session('trailing update', trailingUpdateGraph);
  const res = await session.run({ a: f64(a, [m, m]), p: f64(p, [k, m]), q: f64(q, [k, m]), range: i64([s, m]) });
  return res.out.data as Float64Array;
}
