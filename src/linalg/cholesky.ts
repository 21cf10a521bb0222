import { trailingUpdate } from './f64-graph.js';

export interface PivotedCholesky {
  /** Row k holds column k of L, length n, in the original (unpermuted) index order; A ≈ Σ_k l_k l_kᵀ. */
  factors: Float64Array;
  rank: number;
}

export interface CholeskyOptions {
  /** Columns factored in JS between two trailing updates on ORT. */
  block?: number;
  /** Stop once the largest remaining diagonal falls to this fraction of the largest diagonal of A. */
  relTol?: number;
}

/**
 * A = L Lᵀ with diagonal pivoting, blocked as LAPACK's dpstrf: each step takes the largest remaining diagonal, and
 * the factorisation stops once that falls below `relTol` times the largest diagonal, so a rank-deficient covariance
 * (fewer samples than features) yields its numerical rank instead of a square root of rounding noise. A panel of
 * `block` columns is factored left-looking in JS (pivots need the diagonals updated column by column); the trailing
 * block then takes the panel's rank-`block` update in one float64 GEMM on ORT. `a` is the symmetric n×n matrix,
 * row-major, of which the part right of the diagonal is read; it is left as is.
 */
export async function pivotedCholesky(
  a: Float64Array,
  n: number,
  opts: CholeskyOptions = {},
): Promise<PivotedCholesky> {
  const block = opts.block ?? 128;
  const relTol = opts.relTol ?? n * 2.220446049250313e-16;
  let maxDiag = 0;
  for (let i = 0; i < n; i++) maxDiag = Math.max(maxDiag, a[i * n + i]);
  const tol = relTol * maxDiag;
  // perm[i] = original index of the row now at position i.
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const factors = new Float64Array(n * n);
  // The panel: row q is column q of L over the m trailing positions.
  const lt = new Float64Array(Math.min(block, n) * n);
  const diag = new Float64Array(n);
  let trail: Float64Array = a.slice();
  let m = n;
  let done = 0;
  for (;;) {
    const w = Math.min(block, m);
    for (let i = 0; i < m; i++) diag[i] = trail[i * m + i];
    let j = 0;
    for (; j < w; j++) {
      let p = -1;
      let best = tol;
      for (let i = j; i < m; i++) {
        if (diag[i] > best) {
          best = diag[i];
          p = i;
        }
      }
      if (p < 0) break;
      if (p !== j) {
        swapUpper(trail, m, j, p);
        for (let q = 0; q < j; q++) swap(lt, q * m + j, q * m + p);
        swap(diag, j, p);
        swap(perm, done + j, done + p);
      }
      factorColumn(trail, lt, diag, m, j);
    }
    // L's rows follow their original index, so later pivots need not revisit the columns written here.
    for (let q = 0; q < j; q++) for (let i = q; i < m; i++) factors[(done + q) * n + perm[done + i]] = lt[q * m + i];
    if (j < w || w === m) return { factors: factors.subarray(0, (done + j) * n), rank: done + j };
    trail = await trailingUpdate(trail, m, lt, lt, w, w);
    done += w;
    m -= w;
  }
}

/**
 * Column j of L from row j of the trailing block (its part right of the diagonal), less the panel's earlier columns;
 * updates the diagonals.
 */
function factorColumn(trail: Float64Array, lt: Float64Array, diag: Float64Array, m: number, j: number): void {
  const c = j * m;
  const piv = Math.sqrt(diag[j]);
  lt[c + j] = piv;
  for (let i = j + 1; i < m; i++) lt[c + i] = trail[c + i];
  // Four earlier columns per pass over the new one: a quarter of its loads and stores.
  let q = 0;
  for (; q + 3 < j; q += 4) {
    const o0 = q * m;
    const o1 = o0 + m;
    const o2 = o1 + m;
    const o3 = o2 + m;
    const f0 = lt[o0 + j];
    const f1 = lt[o1 + j];
    const f2 = lt[o2 + j];
    const f3 = lt[o3 + j];
    for (let i = j + 1; i < m; i++) lt[c + i] -= f0 * lt[o0 + i] + f1 * lt[o1 + i] + f2 * lt[o2 + i] + f3 * lt[o3 + i];
  }
  for (; q < j; q++) {
    const o = q * m;
    const f = lt[o + j];
    for (let i = j + 1; i < m; i++) lt[c + i] -= f * lt[o + i];
  }
  const inv = 1 / piv;
  for (let i = j + 1; i < m; i++) {
    lt[c + i] *= inv;
    const l = lt[c + i];
    diag[i] -= l * l;
  }
}

/**
 * Swap index j < p of a symmetric m×m matrix of which only the part right of the diagonal is kept up to date, in
 * rows j and beyond (LAPACK dpstrf's upper-triangle swap): earlier rows are factored and never read again.
 */
function swapUpper(a: Float64Array, m: number, j: number, p: number): void {
  swap(a, j * m + j, p * m + p);
  for (let i = j + 1; i < p; i++) swap(a, j * m + i, i * m + p);
  for (let c = p + 1; c < m; c++) swap(a, j * m + c, p * m + c);
}

function swap(a: Float64Array | Int32Array, x: number, y: number): void {
  const t = a[x];
  a[x] = a[y];
  a[y] = t;
}
