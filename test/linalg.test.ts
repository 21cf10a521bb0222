import test from 'ava';
import { pivotedCholesky } from '../src/linalg/cholesky.js';
import { symmetricEigenvalues } from '../src/linalg/eigen.js';
import { Rng } from '../src/core/rng.js';

/** X Xᵀ for a random n×k X: positive semidefinite of rank min(n, k). */
function gram(n: number, k: number, seed: number): Float64Array {
  const rng = Rng.fromSeed(seed);
  const x = Float64Array.from({ length: n * k }, () => rng.next() - 0.5);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) for (let t = 0; t < k; t++) a[i * n + j] += x[i * k + t] * x[j * k + t];
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

/** Q diag(λ) Qᵀ with Q orthogonal (Gram–Schmidt twice over a random matrix). */
function withSpectrum(lambda: number[], seed: number): Float64Array {
  const n = lambda.length;
  const rng = Rng.fromSeed(seed);
  const q = Float64Array.from({ length: n * n }, () => rng.next() - 0.5);
  for (let pass = 0; pass < 2; pass++) {
    for (let j = 0; j < n; j++) {
      for (let k = 0; k < j; k++) {
        let s = 0;
        for (let i = 0; i < n; i++) s += q[i * n + j] * q[i * n + k];
        for (let i = 0; i < n; i++) q[i * n + j] -= s * q[i * n + k];
      }
      let norm = 0;
      for (let i = 0; i < n; i++) norm += q[i * n + j] ** 2;
      for (let i = 0; i < n; i++) q[i * n + j] /= Math.sqrt(norm);
    }
  }
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) a[i * n + j] += q[i * n + k] * lambda[k] * q[j * n + k];
  return a;
}

const sorted = (x: ArrayLike<number>) => Array.from(x).sort((p, q) => p - q);

test('symmetric eigenvalues recover a known spectrum, whatever the band and the outer block', async (t) => {
  // Repeated, zero, negative and widely spread eigenvalues.
  const lambda = Array.from({ length: 45 }, (_, i) =>
    i % 9 === 0 ? 0 : i % 7 === 0 ? 2.5 : (i - 20) * 0.37 * 1.3 ** (i % 5),
  );
  const a = withSpectrum(lambda, 3);
  const before = a.slice();
  const expected = sorted(lambda);
  const scale = Math.max(...lambda.map(Math.abs));
  for (const opts of [{ band: 4, outer: 8 }, { band: 3, outer: 3 }, { band: 1 }, { band: 16 }, { band: 64 }]) {
    const got = sorted(await symmetricEigenvalues(a, 45, opts));
    const err = Math.max(...got.map((g, i) => Math.abs(g - expected[i])));
    t.true(err < 1e-12 * scale, `${JSON.stringify(opts)}: error ${err}`);
  }
  t.deepEqual(a, before);
});

test('symmetric eigenvalues of the smallest matrices', async (t) => {
  t.deepEqual(Array.from(await symmetricEigenvalues(Float64Array.of(3), 1)), [3]);
  const [lo, hi] = sorted(await symmetricEigenvalues(Float64Array.of(2, 1, 1, 2), 2));
  t.true(Math.abs(lo - 1) < 1e-15 && Math.abs(hi - 3) < 1e-15, `${lo}, ${hi}`);
});
