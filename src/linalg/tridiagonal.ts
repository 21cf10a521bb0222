import type { Band } from './band-reduction.js';

export interface Tridiagonal {
  /** Diagonal, n. */
  d: Float64Array;
  /** e[i] = T[i+1][i]; e[n−1] = 0. */
  e: Float64Array;
}

/**
 * Stage two of the symmetric eigenvalue solver: Givens rotations that take a band to tridiagonal form with the same
 * spectrum (Schwarz's algorithm, as EISPACK's bandr and LAPACK's dsbtrd). Column by column, each element below the
 * subdiagonal is rotated into its upper neighbour; the rotation spills one element just outside the band, b rows
 * further down, which the next rotation clears, until the spill falls off the end. O(b n²) work on a band that stays
 * in cache. Overwrites `band`.
 */
export function bandToTridiagonal(band: Band): Tridiagonal {
  const { n, b, data } = band;
  const stride = b + 2;
  for (let j = 0; j + 2 < n; j++) {
    for (let t = Math.min(b, n - 1 - j); t >= 2; t--) {
      let col = j;
      let row = j + t;
      while (rotate(data, stride, n, b, col, row) && row + b < n) {
        col = row - 1;
        row += b;
      }
    }
  }
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  for (let i = 0; i < n; i++) d[i] = data[i * stride];
  for (let i = 0; i + 1 < n; i++) e[i] = data[(i + 1) * stride + 1];
  return { d, e };
}

/**
 * Zero A[q][col] by a rotation of rows and columns q−1 and q (A ← G A Gᵀ), on the lower band stored by rows.
 * Returns false when there was nothing to rotate (so no fill to chase).
 */
function rotate(a: Float64Array, stride: number, n: number, b: number, col: number, q: number): boolean {
  const p = q - 1;
  const rp = p * stride + p;
  const rq = q * stride + q;
  const y = a[rq - col];
  if (y === 0) return false;
  const x = a[rp - col];
  const r = hypot(x, y);
  const c = x / r;
  const s = y / r;
  a[rp - col] = r;
  a[rq - col] = 0;
  // Rows p and q left of the diagonal block.
  for (let l = col + 1; l < p; l++) {
    const u = a[rp - l];
    const v = a[rq - l];
    a[rp - l] = c * u + s * v;
    a[rq - l] = c * v - s * u;
  }
  const app = a[p * stride];
  const aqq = a[q * stride];
  const aqp = a[q * stride + 1];
  a[p * stride] = c * c * app + 2 * c * s * aqp + s * s * aqq;
  a[q * stride] = s * s * app - 2 * c * s * aqp + c * c * aqq;
  a[q * stride + 1] = c * s * (aqq - app) + (c * c - s * s) * aqp;
  // Columns p and q below it; at l = q + b this writes the fill into slot b + 1.
  const end = Math.min(n - 1, q + b);
  for (let l = q + 1; l <= end; l++) {
    const base = l * stride + l;
    const u = a[base - p];
    const v = a[base - q];
    a[base - p] = c * u + s * v;
    a[base - q] = c * v - s * u;
  }
  return true;
}

/** Implicit QL on the tridiagonal (d diagonal, e[i] = T[i+1, i]); eigenvalues replace d. */
export function tridiagonalQL(d: Float64Array, e: Float64Array, n: number): void {
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
      let r = hypot(g, 1);
      g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = m - 1;
      for (; i >= l; i--) {
        let f = s * e[i];
        const b = c * e[i];
        r = hypot(f, g);
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

/** Math.hypot costs about ten square roots in V8; it is needed only where the squares would overflow or underflow. */
function hypot(x: number, y: number): number {
  const s = x * x + y * y;
  return s > 1e-300 && s < 1e300 ? Math.sqrt(s) : Math.hypot(x, y);
}
