import type { F32Tensor } from '../core/tensor.js';
import type { WeightStore } from '../core/weights.js';
import { InputError } from '../core/errors.js';

/** Where a renamed weight comes from: a key of the inner store, optionally a block of its rows (a fused tensor). */
export interface WeightSource {
  key: string;
  /** Rows [start, end) along the first dimension, e.g. q out of a fused qkv projection. */
  rows?: [number, number];
}

/**
 * A view of `inner` under other names: the model trees read diffusers / transformers keys while the tensors stay
 * in the original checkpoint file. Inner keys the rename map does not cover are listed under their own names, so
 * a module tree's "weights not used" check reports them.
 */
export class RenamedWeights implements WeightStore {
  private readonly all: string[];
  private readonly own: Set<string>;

  constructor(
    readonly inner: WeightStore & { close?(): void },
    readonly renamed: Map<string, WeightSource>,
    /** Inner keys that belong to this view (the others are another component's, or dropped on purpose). */
    ownKeys: string[],
  ) {
    const covered = new Set([...renamed.values()].map((s) => s.key));
    this.own = new Set(ownKeys.filter((k) => !covered.has(k) && !renamed.has(k)));
    this.all = [...renamed.keys(), ...this.own];
  }

  get source(): string {
    return this.inner.source;
  }

  keys(): string[] {
    return this.all;
  }

  has(key: string): boolean {
    return this.renamed.has(key) || this.own.has(key);
  }

  shape(key: string): number[] | undefined {
    const src = this.renamed.get(key);
    if (!src) return this.own.has(key) ? this.inner.shape(key) : undefined;
    const shape = this.inner.shape(src.key);
    if (!shape || !src.rows) return shape;
    return [src.rows[1] - src.rows[0], ...shape.slice(1)];
  }

  get(key: string): F32Tensor {
    const src = this.renamed.get(key) ?? (this.own.has(key) ? { key } : undefined);
    if (!src) throw new InputError(`${this.source}: missing weight ${key}`);
    const t = this.inner.get(src.key);
    if (!src.rows) return t;
    const [start, end] = src.rows;
    if (end > t.shape[0])
      throw new InputError(`${this.source}: ${src.key} has ${t.shape[0]} rows; ${key} needs rows ${start}..${end}`);
    const rowSize = t.shape.slice(1).reduce((a, b) => a * b, 1);
    return {
      dtype: 'F32',
      shape: [end - start, ...t.shape.slice(1)],
      data: t.data.slice(start * rowSize, end * rowSize),
    };
  }

  /** Closes the inner store (the checkpoint file), when it holds one open. */
  close(): void {
    this.inner.close?.();
  }
}
