/**
 * Eigenvalues of a symmetric matrix (unordered): Householder reduction to tridiagonal form, then implicit QL with
 * Wilkinson shifts. Reads the lower triangle of `a`, which it overwrites.
 */
export function symmetricEigenvalues(a: Float64Array, n: number): Float64Array {
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  tridiagonalize(a, n, d, e);
  tridiagonalQL(d, e, n);
  return d;
}

function tridiagonalize(a: Float64Array, n: number, d: Float64Array, e: Float64Array): void {
  // Only the lower triangle is read and written: half the memory traffic of the full matrix.
  const v = new Float64Array(n);
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    d[k] = a[k * n + k];
    // Householder vector zeroing column k below the subdiagonal.
    let norm2 = 0;
    for (let i = k + 1; i < n; i++) norm2 += a[i * n + k] * a[i * n + k];
    const x0 = a[(k + 1) * n + k];
    if (norm2 === 0) {
      e[k] = 0;
      continue;
    }
    const alpha = x0 > 0 ? -Math.sqrt(norm2) : Math.sqrt(norm2);
    e[k] = alpha;
    for (let i = k + 1; i < n; i++) v[i] = a[i * n + k];
    v[k + 1] -= alpha;
    const vv = norm2 - x0 * x0 + v[k + 1] * v[k + 1];
    const beta = 2 / vv;
    // p = A v over the trailing block, one pass over its lower triangle (each off-diagonal entry serves twice).
    p.fill(0, k + 1, n);
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = v[i];
      let s0 = 0;
      let s1 = 0;
      let j = k + 1;
      for (; j + 1 < i; j += 2) {
        const a0 = a[row + j];
        const a1 = a[row + j + 1];
        s0 += a0 * v[j];
        s1 += a1 * v[j + 1];
        p[j] += a0 * vi;
        p[j + 1] += a1 * vi;
      }
      for (; j < i; j++) {
        s0 += a[row + j] * v[j];
        p[j] += a[row + j] * vi;
      }
      p[i] += s0 + s1 + a[row + i] * vi;
    }
    let vp = 0;
    for (let i = k + 1; i < n; i++) vp += v[i] * (p[i] *= beta);
    const kk = 0.5 * beta * vp;
    for (let i = k + 1; i < n; i++) p[i] -= kk * v[i];
    // A ← A - v w^T - w v^T, with w now in p.
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = v[i];
      const wi = p[i];
      for (let j = k + 1; j <= i; j++) a[row + j] -= vi * p[j] + wi * v[j];
    }
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2];
    e[n - 2] = a[(n - 1) * n + n - 2];
  }
  if (n >= 1) d[n - 1] = a[(n - 1) * n + n - 1];
  e[n - 1] = 0;
}

/** Implicit QL on the tridiagonal (d diagonal, e[i] = T[i+1, i]); eigenvalues replace d. */
function tridiagonalQL(d: Float64Array, e: Float64Array, n: number): void {
  for (let l = 0; l < n; l++) {
    for (let iter = 0; ; iter++) {
      let m = l;
      for (; m < n - 1; m++) {
        const dd = Math.abs(d[m]) + Math.abs(d[m + 1]);
        if (Math.abs(e[m]) <= 2.220446049250313e-16 * dd) break;
      }
      if (m === l) break;
      if (iter === 200) throw new Error(`symmetric eigenvalues: QL did not converge at index ${l}`);
      let g = (d[l + 1] - d[l]) / (2 * e[l]);
      let r = Math.hypot(g, 1);
      g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = m - 1;
      for (; i >= l; i--) {
        let f = s * e[i];
        const b = c * e[i];
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1] -= p;
          e[m] = 0;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        f = 0;
      }
      if (r === 0 && i >= l) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0;
    }
  }
}
