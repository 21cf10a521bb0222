import { f32ToF16, type Tensor } from '../core/tensor.js';
import type { ElemType, GraphBuilder, Node } from './graph.js';
import { interpret } from './interpret.js';

/**
 * Ops kept in float32 in a float16 graph: softmax and the normalisations accumulate sums whose float16 rounding
 * visibly changes SD's pictures (diffusers keeps them in float32 under autocast for the same reason).
 */
export const FLOAT32_OPS = new Set(['Softmax', 'LayerNormalization', 'InstanceNormalization', 'GroupNormalization']);

/**
 * A node-name segment (`<module>/float32/<op>`) that keeps a node in float32 whatever its op: a model marks what its
 * config asks to compute in float32, such as the attention scores of SD 2.1 (diffusers' upcast_attention).
 */
export const FLOAT32_SCOPE = 'float32';

const CAST_TO = { f32: 1, f16: 10 } as const;

type Kind = 'f32' | 'f16' | 'other';

const kindOf = (t: ElemType | undefined): Kind => (t === 'float32' ? 'f32' : t === 'float16' ? 'f16' : 'other');

export interface Float16Options {
  /** Nodes kept in float32 besides FLOAT32_OPS (e.g. by name prefix). */
  keepFloat32?: (n: Node) => boolean;
}

/**
 * Turn a float32 graph into a mixed-precision one for GPU providers, in place: float weights become float16 and
 * every node computes in float16 except FLOAT32_OPS, nodes under FLOAT32_SCOPE and `keepFloat32`, with Casts where
 * the two meet. Graph inputs and outputs keep their float32 types, so callers feed and read the same tensors as before.
 */
export function convertToFloat16(g: GraphBuilder, opts: Float16Options = {}): GraphBuilder {
  // Element types in the float32 graph: a float output computed from float inputs follows the node's precision.
  const types = interpret(g).types;
  const kind = new Map<string, Kind>();
  for (const v of g.inputs) kind.set(v.name, kindOf(v.type));
  for (const name of g.initializers.keys()) kind.set(name, kindOf(types.get(name)));
  const graphOutputs = new Set(g.outputs.map((o) => o.name));
  const oldNodes = g.nodes.splice(0);
  const casts = new Map<string, string>();
  const f16Weights = new Map<string, string>();

  /** `value` in the precision `to`: a float16 copy of a weight, or a (shared) Cast of an activation. */
  const convert = (value: string, to: 'f32' | 'f16'): string => {
    const w = g.initializers.get(value);
    if (w && to === 'f16' && w.dtype === 'F32') {
      let name = f16Weights.get(value);
      if (!name) {
        name = g.constant(
          { dtype: 'F16', shape: w.shape, data: f32ToF16(w.data as Float32Array) } as Tensor,
          `${value}:f16`,
        );
        kind.set(name, 'f16');
        f16Weights.set(value, name);
      }
      return name;
    }
    const key = `${value}\0${to}`;
    let cast = casts.get(key);
    if (!cast) {
      cast = g.uniqueName(`${value}:${to}`);
      g.nodes.push({
        op: 'Cast',
        domain: '',
        name: `${cast}/Cast`,
        inputs: [value],
        outputs: [cast],
        attrs: { to: CAST_TO[to] },
      });
      kind.set(cast, to);
      casts.set(key, cast);
    }
    return cast;
  };

  for (const n of oldNodes) {
    const float32 = FLOAT32_OPS.has(n.op) || n.name.includes(`/${FLOAT32_SCOPE}/`) || opts.keepFloat32?.(n);
    const mode: 'f32' | 'f16' = float32 || n.outputs.some((o) => graphOutputs.has(o)) ? 'f32' : 'f16';
    let anyFloat = false;
    const inputs = n.inputs.map((x) => {
      const k = x === '' ? 'other' : kind.get(x);
      if (k === undefined) throw new Error(`convertToFloat16: ${n.name} reads ${x} before it is made`);
      if (k === 'other') return x;
      anyFloat = true;
      return k === mode ? x : convert(x, mode);
    });
    for (const o of n.outputs) {
      const k = kindOf(types.get(o));
      kind.set(o, k !== 'other' && anyFloat && n.op !== 'Cast' ? mode : k);
    }
    g.nodes.push({ ...n, inputs });
  }
  // Weights read only through their float16 copies are dropped.
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const name of f16Weights.keys()) if (!read.has(name)) g.initializers.delete(name);
  return g;
}
