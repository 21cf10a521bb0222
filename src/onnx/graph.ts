import { numel, type F32Tensor, type Tensor } from '../core/tensor.js';

/** The graph IR every model is built in: plain data, serialised to ONNX at the end (see serialize.ts). */
export type ElemType = 'float32' | 'float16' | 'int64' | 'int32' | 'bool' | 'uint8';
/** A fixed size, or a symbolic one such as 'batch'. */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  type: ElemType;
  shape: Dim[];
}

export type AttrValue = number | string | number[] | string[] | Tensor;

export interface Node {
  op: string;
  domain: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
}

/** Attribute names that ONNX types as float; every other numeric attribute is an int. */
export const FLOAT_ATTRS = new Set([
  'epsilon',
  'alpha',
  'beta',
  'scale',
  'gamma',
  'value_float',
  'value_floats',
  'lambd',
  'bias',
  'momentum',
]);

export interface OpOptions {
  domain?: string;
  /** A readable prefix for the node and its outputs, usually the owning module's checkpoint path. */
  name?: string;
  outputs?: number;
}

/** Builds a graph node by node; values are referred to by name. */
export class GraphBuilder {
  readonly nodes: Node[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  readonly initializers = new Map<string, Tensor>();
  private readonly taken = new Set<string>();
  private counter = 0;

  uniqueName(hint: string): string {
    let name = hint;
    while (this.taken.has(name)) name = `${hint}_${++this.counter}`;
    this.taken.add(name);
    return name;
  }

  input(name: string, type: ElemType, shape: Dim[]): string {
    if (this.taken.has(name)) throw new Error(`graph input ${name}: name already used`);
    this.taken.add(name);
    this.inputs.push({ name, type, shape });
    return name;
  }

  /** Expose value `value` as graph output `name` (an Identity node renames it where needed). */
  output(value: string, name: string, type: ElemType, shape: Dim[]): string {
    let v = value;
    if (value !== name) {
      if (this.taken.has(name)) throw new Error(`graph output ${name}: name already used`);
      this.taken.add(name);
      this.nodes.push({
        op: 'Identity',
        domain: '',
        name: `${name}/Identity`,
        inputs: [value],
        outputs: [name],
        attrs: {},
      });
      v = name;
    }
    this.outputs.push({ name: v, type, shape });
    return v;
  }

  /** A named weight; the name is the checkpoint key, so graphs and checkpoints line up without tables. */
  initializer(name: string, t: Tensor): string {
    if (this.initializers.has(name)) return name;
    if (this.taken.has(name)) throw new Error(`initializer ${name}: name already used by another value`);
    this.taken.add(name);
    this.initializers.set(name, t);
    return name;
  }

  /** An anonymous constant tensor. */
  constant(t: Tensor, hint = 'const'): string {
    const name = this.uniqueName(hint);
    this.initializers.set(name, t);
    return name;
  }

  constF32(values: number[] | Float32Array, shape: number[] = [values.length]): string {
    const data = values instanceof Float32Array ? values : Float32Array.from(values);
    if (data.length !== numel(shape)) throw new Error(`constF32: ${data.length} values for shape [${shape}]`);
    return this.constant({ dtype: 'F32', shape, data } as F32Tensor, 'const_f32');
  }

  constI64(values: number[], shape: number[] = [values.length]): string {
    return this.constant({ dtype: 'I64', shape, data: BigInt64Array.from(values.map(BigInt)) }, 'const_i64');
  }

  scalarF32(v: number): string {
    return this.constF32([v], []);
  }

  /** Add a node with one output and return that output's name. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: OpOptions = {}): string {
    return this.opN(op, inputs, attrs, { ...opts, outputs: 1 })[0];
  }

  /** Add a node and return the names of its outputs. */
  opN(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: OpOptions = {}): string[] {
    const base = this.uniqueName(opts.name ? `${opts.name}/${op}` : op);
    const n = opts.outputs ?? 1;
    const outputs = Array.from({ length: n }, (_, i) => this.uniqueName(n === 1 ? `${base}:0` : `${base}:${i}`));
    this.nodes.push({ op, domain: opts.domain ?? '', name: base, inputs, outputs, attrs });
    return outputs;
  }

  // Shorthands for the structural ops every architecture uses.
  reshape(x: string, shape: number[], name?: string): string {
    return this.op('Reshape', [x, this.constI64(shape)], {}, { name });
  }

  transpose(x: string, perm: number[], name?: string): string {
    return this.op('Transpose', [x], { perm }, { name });
  }

  unsqueeze(x: string, axes: number[], name?: string): string {
    return this.op('Unsqueeze', [x, this.constI64(axes)], {}, { name });
  }

  add(a: string, b: string, name?: string): string {
    return this.op('Add', [a, b], {}, { name });
  }

  mul(a: string, b: string, name?: string): string {
    return this.op('Mul', [a, b], {}, { name });
  }

  matmul(a: string, b: string, name?: string): string {
    return this.op('MatMul', [a, b], {}, { name });
  }

  /**
   * The nodes that lead to a graph output, in order. onnxruntime runs every node of a model whether or not an output
   * needs it, so nodes left unused (a gradient rule that computed a value another rule then did without) would cost
   * their full time.
   */
  liveNodes(): Node[] {
    const needed = new Set(this.outputs.map((o) => o.name));
    const live: boolean[] = new Array(this.nodes.length).fill(false);
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i];
      if (!n.outputs.some((o) => needed.has(o))) continue;
      live[i] = true;
      for (const v of n.inputs) if (v) needed.add(v);
    }
    return this.nodes.filter((_, i) => live[i]);
  }
}
