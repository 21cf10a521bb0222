import { FLOAT32_SCOPE } from '../onnx/fp16.js';
import type { AttentionKernel, Scope } from './scope.js';

/** Layers shared by every architecture, each reading its weights under the names PyTorch gives them. */

export class Linear {
  readonly weight: string;
  readonly bias?: string;
  constructor(
    readonly s: Scope,
    readonly inFeatures: number,
    readonly outFeatures: number,
    bias = true,
  ) {
    this.weight = s.param('weight', [outFeatures, inFeatures]);
    if (bias) this.bias = s.param('bias', [outFeatures]);
  }

  /** x [..., in] -> [..., out]. PyTorch stores W as [out, in]; the Transpose of a constant is folded by ORT. */
  forward(x: string): string {
    const g = this.s.g;
    const wt = g.transpose(this.weight, [1, 0], this.s.path);
    const y = g.matmul(x, wt, this.s.path);
    return this.bias ? g.add(y, this.bias, this.s.path) : y;
  }
}

export class Conv2d {
  readonly weight: string;
  readonly bias?: string;
  constructor(
    readonly s: Scope,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernel: number,
    /** `padding`: one size for every side, or [top, left, bottom, right] (ONNX's order: begins, then ends). */
    readonly opts: { stride?: number; padding?: number | [number, number, number, number]; bias?: boolean } = {},
  ) {
    this.weight = s.param('weight', [outChannels, inChannels, kernel, kernel]);
    if (opts.bias ?? true) this.bias = s.param('bias', [outChannels]);
  }

  forward(x: string): string {
    const p = this.opts.padding ?? 0;
    const pads = typeof p === 'number' ? [p, p, p, p] : p;
    const st = this.opts.stride ?? 1;
    const inputs = this.bias ? [x, this.weight, this.bias] : [x, this.weight];
    const attrs = { kernel_shape: [this.kernel, this.kernel], pads, strides: [st, st] };
    return this.s.g.op('Conv', inputs, attrs, { name: this.s.path });
  }
}

export class LayerNorm {
  readonly weight: string;
  readonly bias: string;
  constructor(
    readonly s: Scope,
    readonly dim: number,
    readonly eps: number,
  ) {
    this.weight = s.param('weight', [dim]);
    this.bias = s.param('bias', [dim]);
  }

  forward(x: string): string {
    return this.s.g.op(
      'LayerNormalization',
      [x, this.weight, this.bias],
      { axis: -1, epsilon: this.eps },
      { name: this.s.path },
    );
  }
}

/**
 * GroupNorm over NCHW, lowered to Reshape + InstanceNormalization + per-channel affine: the channel groups become
 * the instance-norm channels, which ORT runs as one fused kernel.
 */
export class GroupNorm {
  readonly weight: string;
  readonly bias: string;
  constructor(
    readonly s: Scope,
    readonly groups: number,
    readonly channels: number,
    readonly eps: number,
  ) {
    if (channels % groups !== 0) throw new Error(`${s.path}: ${channels} channels do not split into ${groups} groups`);
    this.weight = s.param('weight', [channels]);
    this.bias = s.param('bias', [channels]);
  }

  forward(x: string): string {
    const g = this.s.g;
    const name = this.s.path;
    const shape = g.op('Shape', [x], {}, { name });
    const grouped = g.reshape(x, [0, this.groups, -1], name);
    const ones = g.constF32(new Float32Array(this.groups).fill(1));
    const zeros = g.constF32(new Float32Array(this.groups));
    const normed = g.op('InstanceNormalization', [grouped, ones, zeros], { epsilon: this.eps }, { name });
    const back = g.op('Reshape', [normed, shape], {}, { name });
    const gamma = g.reshape(this.weight, [this.channels, 1, 1], name);
    const beta = g.reshape(this.bias, [this.channels, 1, 1], name);
    return g.add(g.mul(back, gamma, name), beta, name);
  }
}

export class Embedding {
  readonly weight: string;
  constructor(
    readonly s: Scope,
    readonly num: number,
    readonly dim: number,
  ) {
    this.weight = s.param('weight', [num, dim]);
  }

  /** ids (int64) [...] -> [..., dim] */
  forward(ids: string): string {
    return this.s.g.op('Gather', [this.weight, ids], { axis: 0 }, { name: this.s.path });
  }
}

export type Activation = 'silu' | 'gelu' | 'quick_gelu' | 'gelu_tanh';

export function activation(s: Scope, kind: string, x: string): string {
  const g = s.g;
  const name = s.path;
  switch (kind) {
    case 'silu':
    case 'swish':
      return g.mul(x, g.op('Sigmoid', [x], {}, { name }), name);
    case 'quick_gelu':
      // ORT fuses x * sigmoid(1.702 x) into this kernel by itself in inference graphs, but not in training graphs,
      // where the intermediate values are kept for the backward pass: there the one op saves two passes.
      return g.op('QuickGelu', [x], { alpha: 1.702 }, { name, domain: 'com.microsoft' });
    case 'gelu': {
      // Exact GELU: 0.5 x (1 + erf(x / sqrt 2)); opset 17 has no Gelu op.
      const erf = g.op('Erf', [g.mul(x, g.scalarF32(Math.SQRT1_2), name)], {}, { name });
      return g.mul(g.mul(x, g.scalarF32(0.5), name), g.add(erf, g.scalarF32(1), name), name);
    }
    case 'gelu_tanh':
    case 'gelu_pytorch_tanh':
    case 'gelu_new': {
      const x3 = g.mul(g.mul(x, x, name), x, name);
      const inner = g.mul(
        g.add(x, g.mul(x3, g.scalarF32(0.044715), name), name),
        g.scalarF32(Math.sqrt(2 / Math.PI)),
        name,
      );
      const t = g.op('Tanh', [inner], {}, { name });
      return g.mul(g.mul(x, g.scalarF32(0.5), name), g.add(t, g.scalarF32(1), name), name);
    }
    default:
      throw new Error(`${name}: unsupported activation '${kind}'`);
  }
}

/**
 * Scaled dot-product attention over [B, S, heads*headDim] projections; `mask` is added to the [B, H, Sq, Sk] scores.
 * `kernel` is the calling module's choice; the graph's Scope option `attentionKernel` overrides it. `upcast`
 * (diffusers' upcast_attention) keeps the scores and their softmax in float32 when the graph is made float16; the
 * weights·V product then runs in float16 again, as diffusers casts the probabilities back before it. A fused
 * kernel computes all three in one node, which then stays float32 as a whole.
 */
export function attention(
  s: Scope,
  q: string,
  k: string,
  v: string,
  heads: number,
  headDim: number,
  mask?: string,
  kernel: AttentionKernel = 'plain',
  upcast = false,
): string {
  const g = s.g;
  const name = s.path;
  const scoresName = upcast ? `${name}/${FLOAT32_SCOPE}` : name;
  const scale = 1 / Math.sqrt(headDim);
  // MultiHeadAttention takes an additive bias only as [B|1, H|1, Sq, Sk], so masked attention (CLIP) stays plain.
  if (!mask && (s.attentionKernel ?? kernel) === 'fused') {
    const attrs = { num_heads: heads, scale };
    return g.op('MultiHeadAttention', [q, k, v], attrs, { name: scoresName, domain: 'com.microsoft' });
  }
  const split = (x: string, perm: number[]) => g.transpose(g.reshape(x, [0, 0, heads, headDim], name), perm, name);
  const qh = split(q, [0, 2, 1, 3]);
  const kt = split(k, [0, 2, 3, 1]);
  const vh = split(v, [0, 2, 1, 3]);
  let scores = g.mul(g.matmul(qh, kt, scoresName), g.scalarF32(scale), scoresName);
  if (mask) scores = g.add(scores, mask, scoresName);
  const probs = g.op('Softmax', [scores], { axis: -1 }, { name: scoresName });
  const out = g.matmul(probs, vh, name);
  return g.reshape(g.transpose(out, [0, 2, 1, 3], name), [0, 0, heads * headDim], name);
}
