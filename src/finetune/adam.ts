import { f32, type F32Tensor } from '../core/tensor.js';

export interface AdamOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  /** L2 penalty added to the gradient, as torch.optim.Adam does (not decoupled AdamW). */
  weightDecay?: number;
}

/**
 * The gradient of a [rows, width] table (an embedding) that is zero outside `rows`: one `width`-long run of `values`
 * per entry of `rows`; a row listed more than once gets the sum of its runs.
 */
export interface RowGradient {
  rows: BigInt64Array;
  values: Float32Array;
  width: number;
}
export type Gradient = Float32Array | RowGradient;

/** Everything a checkpoint must keep to resume: the step count and both moments per parameter. */
export interface AdamState {
  step: number;
  tensors: Map<string, F32Tensor>;
}

const FIRST = 'adam.exp_avg.';
/** Granularity of the skip of never-updated values (one toy-CLIP embedding row is 64 values). */
const CHUNK = 64;
const SECOND = 'adam.exp_avg_sq.';

/**
 * Adam with the same arithmetic as torch.optim.Adam (no amsgrad): bias-corrected moments, eps added to the
 * corrected square root. Parameters are updated in place.
 */
export class Adam {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private step = 0;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();
  private readonly live = new Map<string, Uint8Array>();

  constructor(opts: AdamOptions) {
    this.lr = opts.lr;
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    for (const [k, b] of [
      ['beta1', this.beta1],
      ['beta2', this.beta2],
    ] as const) {
      if (!(b >= 0 && b < 1)) throw new Error(`Adam: ${k} must be in [0, 1), got ${b}`);
    }
    if (!(this.lr >= 0)) throw new Error(`Adam: learning rate must be >= 0, got ${this.lr}`);
  }

  get steps(): number {
    return this.step;
  }

  /** One update of every parameter from its gradient; every parameter must have a gradient of its own size. */
  update(params: Map<string, Float32Array>, grads: Map<string, Gradient>): void {
    for (const [name, p] of params) {
      const grad = grads.get(name);
      if (!grad) throw new Error(`Adam: no gradient for parameter ${name}`);
      if (grad instanceof Float32Array) {
        if (grad.length !== p.length)
          throw new Error(`Adam: gradient of ${name} has ${grad.length} values, the parameter ${p.length}`);
      } else {
        checkRows(name, p, grad);
      }
    }
    this.step++;
    const bc1 = 1 - this.beta1 ** this.step;
    const bc2Sqrt = Math.sqrt(1 - this.beta2 ** this.step);
    const k: StepConstants = {
      b1: this.beta1,
      b2: this.beta2,
      eps: this.eps,
      wd: this.weightDecay,
      stepSize: this.lr / bc1,
      bc2Sqrt,
    };
    for (const [name, p] of params) {
      const grad = grads.get(name)!;
      const m = this.moment(this.m, name, p.length);
      const v = this.moment(this.v, name, p.length);
      if (grad instanceof Float32Array) this.updateDense(name, p, grad, m, v, k);
      else this.updateRows(name, p, grad, m, v, k);
    }
  }

  private updateDense(
    name: string,
    p: Float32Array,
    grad: Float32Array,
    m: Float32Array,
    v: Float32Array,
    k: StepConstants,
  ) {
    const live = this.liveUnits(name, m, v, CHUNK);
    const pairs = pairView(grad);
    for (let c = 0; c < live.length; c++) {
      const start = c * CHUNK;
      const end = Math.min(start + CHUNK, p.length);
      if (!live[c]) {
        // Both moments are zero here, so a zero gradient leaves them and the parameter exactly as they are.
        const zero = pairs && end % 2 === 0 ? pairsZero(pairs, start, end) : isZero(grad, start, end);
        if (k.wd === 0 && zero) continue;
        live[c] = 1;
      }
      adamRange(p, grad, start, m, v, start, end, k);
    }
  }

  /**
   * The dense update without the dense gradient: the batch's rows are summed once, rows whose moments are still
   * zero and that the batch does not touch stay as they are, and every other row takes the step with its gradient
   * (zero outside the batch), as the dense update would.
   */
  private updateRows(
    name: string,
    p: Float32Array,
    grad: RowGradient,
    m: Float32Array,
    v: Float32Array,
    k: StepConstants,
  ) {
    const { rows, values, width } = grad;
    const live = this.liveUnits(name, m, v, width);
    const slot = new Int32Array(live.length).fill(-1);
    const summed = new Float32Array(values.length);
    let distinct = 0;
    for (let i = 0; i < rows.length; i++) {
      const r = Number(rows[i]);
      if (slot[r] < 0) slot[r] = distinct++;
      const to = slot[r] * width;
      for (let j = 0; j < width; j++) summed[to + j] += values[i * width + j];
    }
    const zeros = new Float32Array(width);
    for (let r = 0; r < live.length; r++) {
      const s = slot[r];
      if (s < 0 && !live[r] && k.wd === 0) continue;
      live[r] = 1;
      adamRange(p, s < 0 ? zeros : summed, s < 0 ? 0 : s * width, m, v, r * width, (r + 1) * width, k);
    }
  }

  /**
   * Which `unit`-sized runs of a parameter have ever had a gradient (CHUNK values of a dense gradient, or a row of a
   * row gradient). An embedding table's gradient is zero outside the batch's tokens, and most of a 49,408-token
   * vocabulary never occurs in a data set; skipping its untouched rows gives the same result as the dense update at
   * a small fraction of the cost.
   */
  private liveUnits(name: string, m: Float32Array, v: Float32Array, unit: number): Uint8Array {
    let live = this.live.get(name);
    if (!live || live.length !== Math.ceil(m.length / unit)) {
      live = new Uint8Array(Math.ceil(m.length / unit));
      for (let c = 0; c < live.length; c++) {
        const [start, end] = [c * unit, Math.min((c + 1) * unit, m.length)];
        live[c] = isZero(m, start, end) && isZero(v, start, end) ? 0 : 1;
      }
      this.live.set(name, live);
    }
    return live;
  }

  private moment(store: Map<string, Float32Array>, name: string, n: number): Float32Array {
    let a = store.get(name);
    if (!a) {
      a = new Float32Array(n);
      store.set(name, a);
    }
    if (a.length !== n) throw new Error(`Adam: state of ${name} has ${a.length} values, the parameter ${n}`);
    return a;
  }

  /** The state as named tensors (for a safetensors checkpoint) plus the step count. */
  state(): AdamState {
    const tensors = new Map<string, F32Tensor>();
    for (const [k, a] of this.m) tensors.set(FIRST + k, f32(Float32Array.from(a), [a.length]));
    for (const [k, a] of this.v) tensors.set(SECOND + k, f32(Float32Array.from(a), [a.length]));
    return { step: this.step, tensors };
  }

  /** Resume from `state()`'s output; tensors with other names are refused so a wrong file fails loudly. */
  load(state: AdamState): void {
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`Adam state: bad step count ${state.step}`);
    this.m.clear();
    this.v.clear();
    this.live.clear();
    for (const [k, t] of state.tensors) {
      if (k.startsWith(FIRST)) this.m.set(k.slice(FIRST.length), Float32Array.from(t.data));
      else if (k.startsWith(SECOND)) this.v.set(k.slice(SECOND.length), Float32Array.from(t.data));
      else throw new Error(`Adam state: unexpected tensor ${k}`);
    }
    this.step = state.step;
  }
}

interface StepConstants {
  b1: number;
  b2: number;
  eps: number;
  wd: number;
  stepSize: number;
  bc2Sqrt: number;
}

/**
 * The gradient read two values at a time: the zero test over a dense table gradient's untouched rows (a table read
 * by more than an embedding lookup, e.g. tied weights, whose gradient cannot come as rows: 3.2 M values for CLIP's
 * vocabulary, every step) takes half the time. A pair is zero as a float64 exactly when both floats are +0
 * (or the high one −0); any other pair, −0 included, counts as non-zero, which only costs an update that changes
 * nothing.
 */
function pairView(a: Float32Array): Float64Array | undefined {
  return a.byteOffset % 8 === 0 ? new Float64Array(a.buffer, a.byteOffset, a.length >> 1) : undefined;
}

function pairsZero(pairs: Float64Array, start: number, end: number): boolean {
  for (let i = start >> 1; i < end >> 1; i++) if (pairs[i] !== 0) return false;
  return true;
}

function isZero(a: Float32Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (a[i] !== 0) return false;
  return true;
}

/** Adam over p[start, end), whose gradient starts at grad[from]. */
function adamRange(
  p: Float32Array,
  grad: Float32Array,
  from: number,
  m: Float32Array,
  v: Float32Array,
  start: number,
  end: number,
  k: StepConstants,
): void {
  const { b1, b2, eps, wd, stepSize, bc2Sqrt } = k;
  for (let i = start, j = from; i < end; i++, j++) {
    const gi = wd === 0 ? grad[j] : grad[j] + wd * p[i];
    m[i] = b1 * m[i] + (1 - b1) * gi;
    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
    p[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) / bc2Sqrt + eps);
  }
}

function checkRows(name: string, p: Float32Array, g: RowGradient): void {
  const { rows, values, width } = g;
  if (!(width > 0 && p.length % width === 0))
    throw new Error(`Adam: row gradient of ${name}: rows of ${width} values do not divide its ${p.length} values`);
  if (values.length !== rows.length * width)
    throw new Error(`Adam: row gradient of ${name}: ${values.length} values for ${rows.length} rows of ${width}`);
  const n = p.length / width;
  for (const r of rows)
    if (r < 0n || r >= BigInt(n)) throw new Error(`Adam: row gradient of ${name}: row ${r} of ${n}`);
}
