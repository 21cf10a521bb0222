import test from 'ava';
import { pivotedCholesky } from '../src/eval/cholesky.js';
import { Rng } from '../src/finetune/rng.js';

/** X Xᵀ for a random n×k X: positive semidefinite of rank min(n, k). */
function gram(n: number, k: number, seed: number): Float64Array {
  const rng = Rng.fromSeed(seed);
  const x = Float64Array.from({ length: n * k }, () => rng.next() - 0.5);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let t = 0; t < k; t++) a[i * n + j] += x[i * k + t] * x[j * k + t];
  return a;
}

/** max |A − Σ_k l_k l_kᵀ| relative to max |A|. */
function reconstructionError(a: Float64Array, n: number, factors: Float64Array, rank: number): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < rank; k++) s += factors[k * n + i] * factors[k * n + j];
      err = Math.max(err, Math.abs(a[i * n + j] - s));
      scale = Math.max(scale, Math.abs(a[i * n + j]));
    }
  }
  return err / scale;
}

test('blocked pivoted Cholesky reconstructs a full-rank matrix and agrees with the unblocked one', async (t) => {
  const n = 37;
  const a = gram(n, n + 5, 1);
  const before = a.slice();
  const unblocked = await pivotedCholesky(a, n, { block: n });
  const blocked = await pivotedCholesky(a, n, { block: 5 });
  t.deepEqual(a, before);
  t.is(unblocked.rank, n);
  t.is(blocked.rank, n);
  t.true(reconstructionError(a, n, blocked.factors, n) < 1e-13);
  let diff = 0;
  for (let i = 0; i < n * n; i++) diff = Math.max(diff, Math.abs(blocked.factors[i] - unblocked.factors[i]));
  t.true(diff < 1e-12, `factors differ by ${diff}`);
});

test('pivoted Cholesky stops at the rank of a rank-deficient matrix, inside a panel or at its end', async (t) => {
  const n = 30;
  const a = gram(n, 9, 2);
  for (const block of [4, 3, 64]) {
    const { factors, rank } = await pivotedCholesky(a, n, { block });
    t.is(rank, 9, `block ${block}`);
    t.is(factors.length, 9 * n);
    t.true(reconstructionError(a, n, factors, rank) < 1e-13, `block ${block}`);
  }
  t.is((await pivotedCholesky(new Float64Array(16), 4, { block: 2 })).rank, 0);
});
