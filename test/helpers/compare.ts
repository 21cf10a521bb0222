import type { Tensor } from '../../src/core/tensor.js';

/** A tensor, or a flat run of values whose shape the caller gives as the array's length alone. */
type Values = Tensor | ArrayLike<number>;

const isTensor = (v: Values): v is Tensor => 'shape' in v && 'data' in v;
const data = (v: Values): ArrayLike<number> => (isTensor(v) ? (v.data as ArrayLike<number>) : v);

/**
 * Check that `got` has the shape of `want` before any value is compared: a short or empty output must fail, not
 * pass because there was nothing to compare.
 */
export function assertSameShape(got: Values, want: Values): void {
  if (isTensor(got) && isTensor(want) && got.shape.join() !== want.shape.join())
    throw new Error(`shape [${got.shape}], expected [${want.shape}]`);
  if (data(got).length !== data(want).length)
    throw new Error(`${data(got).length} values, expected ${data(want).length}`);
}

/** Largest |got - want| over every value, after the shape check. */
export function maxAbsError(got: Values, want: Values): number {
  assertSameShape(got, want);
  const [a, b] = [data(got), data(want)];
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(Number(a[i]) - Number(b[i])));
  return Number.isNaN(m) ? Infinity : m;
}

/** Largest |got - want| over the largest |want|: for values that span orders of magnitude. */
export function relError(got: Values, want: Values): number {
  const err = maxAbsError(got, want);
  const b = data(want);
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(Number(b[i])));
  return err / scale;
}
