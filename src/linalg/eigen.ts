import { reduceToBand, type BandOptions } from './band-reduction.js';
import { bandToTridiagonal, tridiagonalQL } from './tridiagonal.js';

/**
 * Eigenvalues of a symmetric matrix (unordered), in two stages as LAPACK's dsyevd_2stage: orthogonal reduction to a
 * band whose O(n³) products run as float64 GEMMs on ORT, then Givens rotations to tridiagonal form and implicit QL
 * with Wilkinson shifts in JS, O(b n²) and O(n²). `a` is the full symmetric n×n matrix, row-major; it is left as is.
 */
export async function symmetricEigenvalues(a: Float64Array, n: number, opts: BandOptions = {}): Promise<Float64Array> {
  const { d, e } = bandToTridiagonal(await reduceToBand(a, n, opts));
  tridiagonalQL(d, e, n);
  return d;
}
