import onnxProto from 'onnx-proto';
import { GraphBuilder } from '../onnx/graph.js';
import { toOrt } from '../onnx/session.js';
import { SafetensorsFile, writeSafetensors } from '../core/safetensors.js';
import { pivotedCholesky } from '../linalg/cholesky.js';
import { f64, f64Session, serializeF64 } from '../linalg/f64-graph.js';
import { symmetricEigenvalues } from '../linalg/eigen.js';

const { onnx } = onnxProto;

/** Mean and covariance of a feature set, in float64 as pytorch-fid keeps them. */
export interface FeatureStats {
  /** [D] */
  mu: Float64Array;
  /** [D, D], row-major, with N−1 in the denominator (np.cov). */
  sigma: Float64Array;
}

/**
 * Width of the column blocks of the Gram matrix: enough for an efficient GEMM, small enough to skip most of the lower
 * half.
 */
const GRAM_BLOCK = 256;

function blockStarts(d: number): number[] {
  return Array.from({ length: Math.ceil(d / GRAM_BLOCK) + 1 }, (_, i) => Math.min(d, i * GRAM_BLOCK));
}

/**
 * features f32 [N, D] → mean f64 [1, D] and the blocks on and above the diagonal of Xcᵀ Xc (Xc centred), g{i}_{j}
 * f64 for column blocks i ≤ j: the N·D² part, on ORT's DGEMM, of which the symmetric half below is not computed.
 */
function centredGramGraph(d: number): Uint8Array {
  const g = new GraphBuilder();
  const x = g.op('Cast', [g.input('features', 'float32', ['n', d])], { to: onnx.TensorProto.DataType.DOUBLE });
  const mean = g.op('ReduceMean', [x], { axes: [0], keepdims: 1 });
  const xc = g.op('Sub', [x, mean]);
  g.output(mean, 'mean', 'float32', [1, d]);
  const starts = blockStarts(d);
  const cols = starts
    .slice(1)
    .map((end, i) => g.op('Slice', [xc, g.constI64([starts[i]]), g.constI64([end]), g.constI64([1])]));
  const f64Values = ['mean'];
  for (let i = 0; i < cols.length; i++) {
    for (let j = i; j < cols.length; j++) {
      const name = g.output(g.op('Gemm', [cols[i], cols[j]], { transA: 1 }), `g${i}_${j}`, 'float32', [
        starts[i + 1] - starts[i],
        starts[j + 1] - starts[j],
      ]);
      f64Values.push(name);
    }
  }
  return serializeF64(g, f64Values);
}

/** lt f64 [R, D], s f64 [D, D] → lt · s · ltᵀ f64 [R, R]. */
function congruenceGraph(): Uint8Array {
  const g = new GraphBuilder();
  const lt = g.input('lt', 'float32', ['r', 'd']);
  const s = g.input('s', 'float32', ['d', 'd']);
  g.output(g.matmul(g.matmul(lt, s), g.transpose(lt, [1, 0])), 'c', 'float32', ['r', 'r']);
  return serializeF64(g, ['lt', 's', 'c']);
}

/** Mean and covariance of N feature vectors of dimension D (row-major [N, D] float32). */
export async function featureStats(features: Float32Array, n: number, d: number): Promise<FeatureStats> {
  if (!Number.isSafeInteger(n) || !Number.isSafeInteger(d) || n < 2 || d < 1)
    throw new Error(`feature stats need N ≥ 2 vectors of D ≥ 1 values, got N=${n}, D=${d}`);
  if (features.length !== n * d) throw new Error(`feature stats: ${features.length} values do not fill [${n}, ${d}]`);
  const gram = await f64Session(`centred gram ${d}`, () => centredGramGraph(d));
  const res = await gram.run({ features: toOrt({ dtype: 'F32', shape: [n, d], data: features }) });
  // Each block and its mirror image: Σ is exactly symmetric, as np.cov's is.
  const sigma = new Float64Array(d * d);
  const starts = blockStarts(d);
  for (let i = 0; i + 1 < starts.length; i++) {
    for (let j = i; j + 1 < starts.length; j++) {
      const block = res[`g${i}_${j}`].data as Float64Array;
      const width = starts[j + 1] - starts[j];
      for (let r = starts[i]; r < starts[i + 1]; r++) {
        for (let c = i === j ? r : starts[j]; c < starts[j + 1]; c++) {
          sigma[r * d + c] = sigma[c * d + r] = block[(r - starts[i]) * width + c - starts[j]] / (n - 1);
        }
      }
    }
  }
  return { mu: res.mean.data as Float64Array, sigma };
}

/**
 * pytorch-fid's calculate_frechet_distance: |μ1−μ2|² + tr Σ1 + tr Σ2 − 2 tr sqrtm(Σ1 Σ2).
 * tr sqrtm(Σ1 Σ2) is taken as Σ √λ over the eigenvalues of Lᵀ Σ2 L with Σ1 = L Lᵀ (pivoted Cholesky): the
 * same spectrum as Σ1 Σ2, but of a symmetric positive semidefinite matrix, so no complex square root and no eps
 * offset is needed when Σ1 is singular (N < D); eigenvalues that rounding pushes below zero count as zero.
 */
export async function frechetDistance(a: FeatureStats, b: FeatureStats): Promise<number> {
  const d = a.mu.length;
  if (b.mu.length !== d) throw new Error(`Fréchet distance: feature dimensions differ (${d} and ${b.mu.length})`);
  if (a.sigma.length !== d * d || b.sigma.length !== d * d)
    throw new Error(`Fréchet distance: covariances are not ${d}×${d}`);
  let dist = 0;
  for (let i = 0; i < d; i++) dist += (a.mu[i] - b.mu[i]) ** 2 + a.sigma[i * d + i] + b.sigma[i * d + i];
  const { factors, rank } = await pivotedCholesky(a.sigma, d);
  if (rank === 0) return dist;
  const congruence = await f64Session('congruence', congruenceGraph);
  const res = await congruence.run({ lt: f64(factors, [rank, d]), s: f64(b.sigma, [d, d]) });
  let trSqrt = 0;
  for (const l of await symmetricEigenvalues(res.c.data as Float64Array, rank)) if (l > 0) trSqrt += Math.sqrt(l);
  return dist - 2 * trSqrt;
}

export function saveStats(path: string, s: FeatureStats, metadata?: Record<string, string>): void {
  const d = s.mu.length;
  writeSafetensors(
    path,
    { mu: { dtype: 'F64', shape: [d], data: s.mu }, sigma: { dtype: 'F64', shape: [d, d], data: s.sigma } },
    metadata,
  );
}

/** Reference statistics cached by saveStats: `mu` F64 [D], `sigma` F64 [D, D]. */
export function loadStats(path: string): FeatureStats {
  const f = SafetensorsFile.open(path);
  try {
    const mu = f.read('mu');
    const sigma = f.read('sigma');
    const d = mu.shape[0];
    if (mu.dtype !== 'F64' || mu.shape.length !== 1)
      throw new Error(`${path} [mu]: expected F64 [D], got ${mu.dtype} [${mu.shape}]`);
    if (sigma.dtype !== 'F64' || sigma.shape.length !== 2 || sigma.shape[0] !== d || sigma.shape[1] !== d) {
      throw new Error(`${path} [sigma]: expected F64 [${d}, ${d}], got ${sigma.dtype} [${sigma.shape}]`);
    }
    return { mu: mu.data as Float64Array, sigma: sigma.data as Float64Array };
  } finally {
    f.close();
  }
}
