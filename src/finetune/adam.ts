import { f32, type F32Tensor } from '../models/tensor.js';

export interface AdamOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  /** L2 penalty added to the gradient, as torch.optim.Adam does (not decoupled AdamW). */
  weightDecay?: number;
}

/** Everything a checkpoint must keep to resume: the step count and both moments per parameter. */
export interface AdamState {
  step: number;
  tensors: Map<string, F32Tensor>;
}

const FIRST = 'adam.exp_avg.';
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

  constructor(opts: AdamOptions) {
    this.lr = opts.lr;
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    for (const [k, b] of [['beta1', this.beta1], ['beta2', this.beta2]] as const) {
      if (!(b >= 0 && b < 1)) throw new Error(`Adam: ${k} must be in [0, 1), got ${b}`);
    }
    if (!(this.lr >= 0)) throw new Error(`Adam: learning rate must be >= 0, got ${this.lr}`);
  }

  get steps(): number {
    return this.step;
  }

  /** One update of every parameter from its gradient; every parameter must have a gradient of its own size. */
  update(params: Map<string, Float32Array>, grads: Map<string, Float32Array>): void {
    for (const [name, p] of params) {
      const grad = grads.get(name);
      if (!grad) throw new Error(`Adam: no gradient for parameter ${name}`);
      if (grad.length !== p.length) throw new Error(`Adam: gradient of ${name} has ${grad.length} values, the parameter ${p.length}`);
    }
    this.step++;
    const bc1 = 1 - this.beta1 ** this.step;
    const bc2Sqrt = Math.sqrt(1 - this.beta2 ** this.step);
    const stepSize = this.lr / bc1;
    for (const [name, p] of params) {
      const grad = grads.get(name)!;
      const m = this.moment(this.m, name, p.length);
      const v = this.moment(this.v, name, p.length);
      for (let i = 0; i < p.length; i++) {
        const gi = this.weightDecay === 0 ? grad[i] : grad[i] + this.weightDecay * p[i];
        m[i] = this.beta1 * m[i] + (1 - this.beta1) * gi;
        v[i] = this.beta2 * v[i] + (1 - this.beta2) * gi * gi;
        p[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) / bc2Sqrt + this.eps);
      }
    }
  }

  private moment(store: Map<string, Float32Array>, name: string, n: number): Float32Array {
    let a = store.get(name);
    if (!a) store.set(name, (a = new Float32Array(n)));
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
    for (const [k, t] of state.tensors) {
      if (k.startsWith(FIRST)) this.m.set(k.slice(FIRST.length), Float32Array.from(t.data));
      else if (k.startsWith(SECOND)) this.v.set(k.slice(SECOND.length), Float32Array.from(t.data));
      else throw new Error(`Adam state: unexpected tensor ${k}`);
    }
    this.step = state.step;
  }
}
