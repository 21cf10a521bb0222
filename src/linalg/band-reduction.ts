import { GraphBuilder } from '../onnx/graph.js';
import { f64, f64Session, i64, serializeF64, sliceRange, trailingUpdate } from './f64-graph.js';

/**
 * A symmetric band matrix of half-bandwidth b, by rows: A[i][i−t] at data[i·(b+2) + t] for 0 ≤ t ≤ b.
 * Slot t = b+1 is kept zero for the one element of fill that the reduction to tridiagonal form chases down the band.
 */
export interface Band {
  n: number;
  b: number;
  data: Float64Array;
}

export interface BandOptions {
  /** Half-bandwidth: the width of each Householder panel. */
  band?: number;
  /** Columns reduced between two explicit updates of the trailing matrix. */
  outer?: number;
}

/**
 * Stage one of a two-stage symmetric eigenvalue solver (LAPACK's dsytrd_sy2sb): orthogonal similarity transforms
 * Qᵀ A Q that leave a band of half-bandwidth b with the spectrum of `a` (full symmetric n×n, row-major; not
 * modified). Each panel of b columns is QR-factorised in JS and applied to both sides as A − V Wᵀ − W Vᵀ, whose
 * products run on ORT. The trailing matrix is formed only every `outer` columns; in between, the panels' (V, W) pairs
 * are accumulated and applied on the fly, so each panel reads the matrix once instead of rewriting it.
 */
export async function reduceToBand(a: Float64Array, n: number, opts: BandOptions = {}): Promise<Band> {
  const b = Math.max(1, Math.min(opts.band ?? 16, n));
  const outer = Math.max(b, opts.outer ?? 256);
  const band: Band = { n, b, data: new Float64Array(n * (b + 2)) };
  // Rows [V₁ᵀ; W₁ᵀ; V₂ᵀ; W₂ᵀ; …] and [W₁ᵀ; V₁ᵀ; …]:
  // the current trailing matrix is a0 − pᵀ q.
  const p = new Float64Array(2 * (outer + b) * n);
  const q = new Float64Array(p.length);
  let a0: Float64Array = a;
  let m = n;
  let done = 0;
  let rows = 0;
  // The panel, transposed: row j is column c0 + j of the current trailing matrix (m long).
  let c0 = 0;
  let pt: Float64Array = a0.slice(0, Math.min(b, m) * m);
  for (;;) {
    const w = Math.min(b, m - c0);
    for (let j = 0; j < w; j++)
      for (let i = j; i < w; i++) setBand(band, done + c0 + i, done + c0 + j, pt[j * m + c0 + i]);
    const r0 = c0 + w;
    if (r0 >= m) return band;
    const { vt, yt } = householderPanel(pt, m, w, r0, (i, j, x) => setBand(band, done + r0 + i, done + c0 + j, x));
    const next = Math.min(b, m - r0);
    const res = await applyPanel(a0, m, vt, yt, w, p, q, rows, r0, next);
    p.set(vt, rows * m);
    p.set(res.wt, (rows + w) * m);
    q.set(res.wt, rows * m);
    q.set(vt, (rows + w) * m);
    rows += 2 * w;
    c0 = r0;
    pt = res.panel;
    if (c0 >= outer && m - c0 > b) {
      a0 = await trailingUpdate(a0, m, p, q, rows, c0);
      done += c0;
      m -= c0;
      c0 = 0;
      rows = 0;
      // The next panel is the first rows of the new trailing matrix (symmetric), already at its new size.
      pt = a0.slice(0, next * m);
    }
  }
}

function setBand(band: Band, i: number, j: number, x: number): void {
  band.data[i * (band.b + 2) + i - j] = x;
}

/**
 * Householder QR of rows [r0, m) of the panel (LAPACK's dgeqr2 and dlarft), given and worked on transposed (w×m):
 * Q = H₀…H_{w−1} = I − V T Vᵀ. Reports R through `r(i, j, x)`, i ≤ j; returns Vᵀ (w×m, zero left of r0,
 * unit leading entries) and Yᵀ = (V T)ᵀ.
 */
function householderPanel(
  pt: Float64Array,
  m: number,
  w: number,
  r0: number,
  r: (i: number, j: number, x: number) => void,
) {
  const vt = new Float64Array(w * m);
  const t = new Float64Array(w * w);
  const h = m - r0;
  for (let j = 0; j < Math.min(w, h); j++) {
    const top = r0 + j;
    const x = pt.subarray(j * m, (j + 1) * m);
    const v = vt.subarray(j * m, (j + 1) * m);
    const alpha = x[top];
    let sigma = 0;
    for (let i = top + 1; i < m; i++) sigma += x[i] * x[i];
    v[top] = 1;
    let beta = alpha;
    let tau = 0;
    if (sigma > 0) {
      const norm = Math.sqrt(alpha * alpha + sigma);
      beta = alpha <= 0 ? norm : -norm;
      tau = (beta - alpha) / beta;
      const scale = 1 / (alpha - beta);
      for (let i = top + 1; i < m; i++) v[i] = x[i] * scale;
    }
    r(j, j, beta);
    for (let k = j + 1; k < w; k++) {
      const y = pt.subarray(k * m, (k + 1) * m);
      let s = 0;
      for (let i = top; i < m; i++) s += v[i] * y[i];
      s *= tau;
      for (let i = top; i < m; i++) y[i] -= s * v[i];
      r(j, k, y[top]);
    }
    // T[0:j, j] = −τ_j T[0:j, 0:j] V[:, 0:j]ᵀ v_j, T[j][j] = τ_j.
    t[j * w + j] = tau;
    if (tau === 0) continue;
    const u = new Float64Array(j);
    for (let k = 0; k < j; k++) {
      const vk = vt.subarray(k * m, (k + 1) * m);
      let s = 0;
      for (let i = top; i < m; i++) s += vk[i] * v[i];
      u[k] = s;
    }
    for (let i = 0; i < j; i++) {
      let s = 0;
      for (let k = i; k < j; k++) s += t[i * w + k] * u[k];
      t[i * w + j] = -tau * s;
    }
  }
  const yt = new Float64Array(w * m);
  for (let j = 0; j < w; j++) {
    const y = yt.subarray(j * m, (j + 1) * m);
    for (let k = 0; k <= j; k++) {
      const f = t[k * w + j];
      if (f === 0) continue;
      const vk = vt.subarray(k * m, (k + 1) * m);
      for (let i = r0 + k; i < m; i++) y[i] += f * vk[i];
    }
  }
  return { vt, yt };
}

/**
 * a f64 [m, m], the panel's vt and yt = (V T)ᵀ f64 [w, m], the earlier panels' p, q f64 [k, m] (current matrix
 * A = a − pᵀ q), next i64 [2] → wt = Wᵀ, W = X − ½ V (Yᵀ X) with X = A Y,
 * so that Qᵀ A Q = A − V Wᵀ − W Vᵀ; and columns `next` of that updated matrix, transposed: the following
 * panel.
 */
function panelGraph(): Uint8Array {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', ['m', 'm']);
  const vt = g.input('vt', 'float32', ['w', 'm']);
  const yt = g.input('yt', 'float32', ['w', 'm']);
  const p = g.input('p', 'float32', ['k', 'm']);
  const q = g.input('q', 'float32', ['k', 'm']);
  const next = g.input('next', 'int64', [2]);
  const gemm = (x: string, y: string, c: string | undefined, attrs: Record<string, number>) =>
    g.op('Gemm', c ? [x, y, c] : [x, y], attrs);
  const x = gemm(p, gemm(q, yt, undefined, { transB: 1 }), gemm(a, yt, undefined, { transB: 1 }), {
    transA: 1,
    alpha: -1,
    beta: 1,
  });
  const z = g.matmul(yt, x);
  const w = gemm(vt, z, x, { transA: 1, alpha: -0.5, beta: 1 });
  const wt = g.transpose(w, [1, 0]);
  // The next panel from rows of a: the matrix is symmetric, and rows are contiguous.
  let cols = gemm(sliceRange(g, q, next, 1), p, sliceRange(g, a, next, 0), { transA: 1, alpha: -1, beta: 1 });
  cols = gemm(sliceRange(g, wt, next, 1), vt, cols, { transA: 1, alpha: -1, beta: 1 });
  cols = gemm(sliceRange(g, vt, next, 1), wt, cols, { transA: 1, alpha: -1, beta: 1 });
  g.output(wt, 'wt', 'float32', ['w', 'm']);
  g.output(cols, 'panel', 'float32', ['c', 'm']);
  return serializeF64(g, ['a', 'vt', 'yt', 'p', 'q', 'wt', 'panel']);
}

async function applyPanel(
  a: Float64Array,
  m: number,
  vt: Float64Array,
  yt: Float64Array,
  w: number,
  p: Float64Array,
  q: Float64Array,
  k: number,
  c: number,
  width: number,
) {
  const session = await f64Session('band panel', panelGraph);
  const res = await session.run({
    a: f64(a, [m, m]),
    vt: f64(vt, [w, m]),
    yt: f64(yt, [w, m]),
    p: f64(p, [k, m]),
    q: f64(q, [k, m]),
    next: i64([c, c + width]),
  });
  return { wt: res.wt.data as Float64Array, panel: res.panel.data as Float64Array };
}
