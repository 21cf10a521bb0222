import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GraphBuilder } from '../onnx/graph.js';
import { Config } from '../core/config.js';
import { activation, attention, Conv2d, GroupNorm, LayerNorm, Linear } from './nn.js';
import { Downsample2D, ResnetBlock2D, Upsample2D, type ResnetSettings } from './resnet.js';
import { Scope } from './scope.js';
import { SafetensorsWeights, weightFiles, type WeightStore } from '../core/weights.js';

/**
 * diffusers' UNet2DConditionModel (Stable Diffusion 1.x / 2.x) as an ONNX graph. Each class below owns the children
 * the diffusers module of the same name owns, under the same attribute names, so checkpoint keys follow from the tree.
 */

/** Stable Diffusion 1.5's `unet/config.json` (runwayml/stable-diffusion-v1-5), for tests and benchmarks. */
export const SD15_UNET_CONFIG = fileURLToPath(new URL('./configs/sd15-unet.json', import.meta.url));

export type DownBlockType = 'CrossAttnDownBlock2D' | 'DownBlock2D';
export type UpBlockType = 'CrossAttnUpBlock2D' | 'UpBlock2D';

export interface UnetConfig {
  /** Where the config came from, for error messages. */
  source: string;
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  downBlockTypes: DownBlockType[];
  upBlockTypes: UpBlockType[];
  layersPerBlock: number[];
  /** Attention heads per down block (mid block uses the last, up blocks the reverse). */
  heads: number[];
  transformerLayersPerBlock: number[];
  /** Transformer layers per up block (diffusers: the reverse of the down blocks' unless given). */
  reverseTransformerLayersPerBlock: number[];
  crossAttentionDim: number;
  useLinearProjection: boolean;
  /**
   * Attention scores (Q·K and softmax) in float32 even in a float16 graph, as diffusers computes them for SD 2.1,
   * whose scores overflow float16.
   */
  upcastAttention: boolean;
  normGroups: number;
  normEps: number;
  actFn: string;
  flipSinToCos: boolean;
  freqShift: number;
  downsamplePadding: number;
  convInKernel: number;
  convOutKernel: number;
  timeEmbedDim: number;
  midBlockScaleFactor: number;
  centerInputSample: boolean;
}

const DOWN_TYPES = ['CrossAttnDownBlock2D', 'DownBlock2D'];
const UP_TYPES = ['CrossAttnUpBlock2D', 'UpBlock2D'];

/** Keys whose non-default values select modules this file does not build (SDXL, class-conditioned UNets, ...). */
const UNSUPPORTED: [key: string, isDefault: (v: unknown) => boolean][] = [
  ['class_embed_type', (v) => v == null],
  ['num_class_embeds', (v) => v == null],
  ['class_embeddings_concat', (v) => v == null || v === false],
  ['addition_embed_type', (v) => v == null],
  ['encoder_hid_dim', (v) => v == null],
  ['encoder_hid_dim_type', (v) => v == null],
  ['time_cond_proj_dim', (v) => v == null],
  ['timestep_post_act', (v) => v == null],
  ['time_embedding_act_fn', (v) => v == null],
  ['time_embedding_type', (v) => v == null || v === 'positional'],
  ['mid_block_type', (v) => v == null || v === 'UNetMidBlock2DCrossAttn'],
  ['resnet_time_scale_shift', (v) => v == null || v === 'default'],
  ['resnet_skip_time_act', (v) => v == null || v === false],
  ['resnet_out_scale_factor', (v) => v == null || v === 1],
  ['attention_type', (v) => v == null || v === 'default'],
  ['dual_cross_attention', (v) => v == null || v === false],
  ['only_cross_attention', (v) => v == null || v === false || (Array.isArray(v) && v.every((x) => x === false))],
  ['mid_block_only_cross_attention', (v) => v == null || v === false],
  ['cross_attention_norm', (v) => v == null],
];

/** Read a diffusers `unet/config.json`, refusing (by key) the options this graph does not implement. */
export function parseUnetConfig(c: Config): UnetConfig {
  if (c.has('_class_name') && c.str('_class_name') !== 'UNet2DConditionModel') {
    throw new Error(
      `${c.file}: config key '_class_name' is ${JSON.stringify(c.raw._class_name)}, expected "UNet2DConditionModel"`,
    );
  }
  for (const [key, isDefault] of UNSUPPORTED) {
    if (!isDefault(c.raw[key]))
      throw new Error(`${c.file}: config key '${key}' = ${JSON.stringify(c.raw[key])} is not supported`);
  }
  const blockOutChannels = c.ints('block_out_channels', [320, 640, 1280, 1280]);
  const n = blockOutChannels.length;
  const downBlockTypes = c.strs('down_block_types', [
    'CrossAttnDownBlock2D',
    'CrossAttnDownBlock2D',
    'CrossAttnDownBlock2D',
    'DownBlock2D',
  ]);
  const upBlockTypes = c.strs('up_block_types', [
    'UpBlock2D',
    'CrossAttnUpBlock2D',
    'CrossAttnUpBlock2D',
    'CrossAttnUpBlock2D',
  ]);
  for (const [key, types, allowed] of [
    ['down_block_types', downBlockTypes, DOWN_TYPES],
    ['up_block_types', upBlockTypes, UP_TYPES],
  ] as const) {
    if (types.length !== n)
      throw new Error(`${c.file}: config key '${key}' has ${types.length} blocks but 'block_out_channels' has ${n}`);
    const bad = types.find((t) => !allowed.includes(t));
    if (bad)
      throw new Error(
        `${c.file}: config key '${key}' has block type '${bad}', which is not supported (only ${allowed.join(', ')})`,
      );
  }
  if (Array.isArray(c.raw.transformer_layers_per_block) && c.raw.transformer_layers_per_block.some(Array.isArray)) {
    throw new Error(`${c.file}: config key 'transformer_layers_per_block' with per-layer lists is not supported`);
  }
  const transformerLayersPerBlock = c.intPerBlock('transformer_layers_per_block', n, 1);
  // The SD quirk: without num_attention_heads, diffusers takes attention_head_dim as the number of heads.
  const heads = c.has('num_attention_heads')
    ? c.intPerBlock('num_attention_heads', n)
    : c.intPerBlock('attention_head_dim', n, 8);
  const timeEmbedDim = c.has('time_embedding_dim') ? c.int('time_embedding_dim') : blockOutChannels[0] * 4;
  if (blockOutChannels[0] % 2 !== 0)
    throw new Error(
      `${c.file}: config key 'block_out_channels' starts with an odd width; the timestep embedding needs an even one`,
    );
  return {
    source: c.file,
    inChannels: c.int('in_channels', 4),
    outChannels: c.int('out_channels', 4),
    blockOutChannels,
    downBlockTypes: downBlockTypes as DownBlockType[],
    upBlockTypes: upBlockTypes as UpBlockType[],
    layersPerBlock: c.intPerBlock('layers_per_block', n, 2),
    heads,
    transformerLayersPerBlock,
    reverseTransformerLayersPerBlock: c.has('reverse_transformer_layers_per_block')
      ? c.intPerBlock('reverse_transformer_layers_per_block', n)
      : [...transformerLayersPerBlock].reverse(),
    crossAttentionDim: c.int('cross_attention_dim', 1280),
    useLinearProjection: c.bool('use_linear_projection', false),
    upcastAttention: c.bool('upcast_attention', false),
    normGroups: c.int('norm_num_groups', 32),
    normEps: c.num('norm_eps', 1e-5),
    actFn: c.str('act_fn', 'silu'),
    flipSinToCos: c.bool('flip_sin_to_cos', true),
    freqShift: c.num('freq_shift', 0),
    downsamplePadding: c.int('downsample_padding', 1),
    convInKernel: c.int('conv_in_kernel', 3),
    convOutKernel: c.int('conv_out_kernel', 3),
    timeEmbedDim,
    midBlockScaleFactor: c.num('mid_block_scale_factor', 1),
    centerInputSample: c.bool('center_input_sample', false),
  };
}

/**
 * The sinusoidal timestep features of diffusers' `get_timestep_embedding` (no weights). The frequencies are computed
 * here in float32 steps as torch does, so `t * freq` rounds as it does there.
 */
export class Timesteps {
  constructor(
    readonly s: Scope,
    readonly dim: number,
    readonly flipSinToCos: boolean,
    readonly freqShift: number,
  ) {}

  /** t [B] -> [B, dim] */
  forward(t: string): string {
    const g = this.s.g;
    const name = this.s.path;
    const half = this.dim / 2;
    const freqs = new Float32Array(half);
    const logMax = Math.fround(-Math.log(10000));
    const denom = Math.fround(half - this.freqShift);
    for (let i = 0; i < half; i++) freqs[i] = Math.exp(Math.fround(Math.fround(logMax * i) / denom));
    const args = g.mul(g.unsqueeze(t, [1], name), g.constF32(freqs, [1, half]), name);
    const sin = g.op('Sin', [args], {}, { name });
    const cos = g.op('Cos', [args], {}, { name });
    return g.op('Concat', this.flipSinToCos ? [cos, sin] : [sin, cos], { axis: 1 }, { name });
  }
}

export class TimestepEmbedding {
  readonly linear_1: Linear;
  readonly linear_2: Linear;
  constructor(
    readonly s: Scope,
    inDim: number,
    timeEmbedDim: number,
    readonly actFn: string,
  ) {
    this.linear_1 = new Linear(s.child('linear_1'), inDim, timeEmbedDim);
    this.linear_2 = new Linear(s.child('linear_2'), timeEmbedDim, timeEmbedDim);
  }

  forward(x: string): string {
    return this.linear_2.forward(activation(this.s, this.actFn, this.linear_1.forward(x)));
  }
}

/** Shared per-block settings that every resnet and transformer of a UNet uses. */
interface BlockSettings extends ResnetSettings {
  crossAttentionDim: number;
  useLinearProjection: boolean;
  upcastAttention: boolean;
}

/** diffusers `Attention` with bias-free q/k/v projections and a biased `to_out.0`. */
export class Attention {
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: Linear;
  readonly headDim: number;
  constructor(
    readonly s: Scope,
    queryDim: number,
    contextDim: number,
    readonly heads: number,
    headDim: number,
    readonly upcast: boolean,
  ) {
    this.headDim = headDim;
    const inner = heads * headDim;
    this.to_q = new Linear(s.child('to_q'), queryDim, inner, false);
    this.to_k = new Linear(s.child('to_k'), contextDim, inner, false);
    this.to_v = new Linear(s.child('to_v'), contextDim, inner, false);
    this.to_out = new Linear(s.child('to_out').child(0), inner, queryDim);
  }

  /** x [B, S, D], context [B, S', D'] (x itself for self-attention) -> [B, S, D] */
  forward(x: string, context = x): string {
    const q = this.to_q.forward(x);
    const k = this.to_k.forward(context);
    const v = this.to_v.forward(context);
    // Measured at SD 1.5's 512 px shapes (docs/benchmarks.md): the fused kernel wins on self-attention over 4096
    // tokens, the plain path on cross-attention's 77 keys.
    const kernel = context === x ? 'fused' : 'plain';
    return this.to_out.forward(attention(this.s, q, k, v, this.heads, this.headDim, undefined, kernel, this.upcast));
  }
}

/** A Linear to twice the width whose second half gates the first through exact GELU. */
export class GEGLU {
  readonly proj: Linear;
  constructor(
    readonly s: Scope,
    dim: number,
    readonly inner: number,
  ) {
    this.proj = new Linear(s.child('proj'), dim, inner * 2);
  }

  forward(x: string): string {
    const g = this.s.g;
    const [hidden, gate] = g.opN(
      'Split',
      [this.proj.forward(x), g.constI64([this.inner, this.inner])],
      { axis: -1 },
      { name: this.s.path, outputs: 2 },
    );
    return g.mul(hidden, activation(this.s, 'gelu', gate), this.s.path);
  }
}

/** diffusers `FeedForward`: `net.0` the GEGLU, `net.1` dropout (no weights), `net.2` the output Linear. */
export class FeedForward {
  readonly net: [GEGLU, null, Linear];
  constructor(
    readonly s: Scope,
    dim: number,
  ) {
    const net = s.child('net');
    this.net = [new GEGLU(net.child(0), dim, dim * 4), null, new Linear(net.child(2), dim * 4, dim)];
  }

  forward(x: string): string {
    return this.net[2].forward(this.net[0].forward(x));
  }
}

export class BasicTransformerBlock {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm;
  readonly attn2: Attention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;
  constructor(
    readonly s: Scope,
    dim: number,
    heads: number,
    headDim: number,
    crossAttentionDim: number,
    upcastAttention: boolean,
  ) {
    this.norm1 = new LayerNorm(s.child('norm1'), dim, 1e-5);
    this.attn1 = new Attention(s.child('attn1'), dim, dim, heads, headDim, upcastAttention);
    this.norm2 = new LayerNorm(s.child('norm2'), dim, 1e-5);
    this.attn2 = new Attention(s.child('attn2'), dim, crossAttentionDim, heads, headDim, upcastAttention);
    this.norm3 = new LayerNorm(s.child('norm3'), dim, 1e-5);
    this.ff = new FeedForward(s.child('ff'), dim);
  }

  /** x [B, HW, D], context [B, S, Dc] */
  forward(x: string, context: string): string {
    const g = this.s.g;
    const name = this.s.path;
    let h = g.add(this.attn1.forward(this.norm1.forward(x)), x, name);
    h = g.add(this.attn2.forward(this.norm2.forward(h), context), h, name);
    return g.add(this.ff.forward(this.norm3.forward(h)), h, name);
  }
}

/**
 * diffusers `Transformer2DModel` on continuous inputs: GroupNorm (eps 1e-6), projection to tokens (a 1x1 conv in
 * SD 1.x, a Linear with `use_linear_projection` in SD 2.x), transformer blocks, projection back, residual.
 */
export class Transformer2DModel {
  readonly norm: GroupNorm;
  readonly proj_in: Linear | Conv2d;
  readonly transformer_blocks: BasicTransformerBlock[];
  readonly proj_out: Linear | Conv2d;
  constructor(
    readonly s: Scope,
    channels: number,
    heads: number,
    layers: number,
    readonly cfg: BlockSettings,
  ) {
    const headDim = Math.floor(channels / heads);
    const inner = heads * headDim;
    this.norm = new GroupNorm(s.child('norm'), cfg.groups, channels, 1e-6);
    this.proj_in = cfg.useLinearProjection
      ? new Linear(s.child('proj_in'), channels, inner)
      : new Conv2d(s.child('proj_in'), channels, inner, 1);
    this.transformer_blocks = Array.from(
      { length: layers },
      (_, k) =>
        new BasicTransformerBlock(
          s.child('transformer_blocks').child(k),
          inner,
          heads,
          headDim,
          cfg.crossAttentionDim,
          cfg.upcastAttention,
        ),
    );
    this.proj_out = cfg.useLinearProjection
      ? new Linear(s.child('proj_out'), inner, channels)
      : new Conv2d(s.child('proj_out'), inner, channels, 1);
  }

  /** x [B, C, H, W], context [B, S, Dc] -> [B, C, H, W] */
  forward(x: string, context: string): string {
    const g = this.s.g;
    const name = this.s.path;
    const toTokens = (v: string) => g.transpose(g.reshape(v, [0, 0, -1], name), [0, 2, 1], name);
    // Back to [B, channels, H, W]; the channels are `inner` before a 1x1-conv proj_out, C after a Linear one.
    const imageShape = g.op(
      'Concat',
      [
        g.op('Shape', [x], { start: 0, end: 1 }, { name }),
        g.constI64([-1]),
        g.op('Shape', [x], { start: 2 }, { name }),
      ],
      { axis: 0 },
      { name },
    );
    const toImage = (v: string) => g.op('Reshape', [g.transpose(v, [0, 2, 1], name), imageShape], {}, { name });
    const normed = this.norm.forward(x);
    let h =
      this.proj_in instanceof Linear ? this.proj_in.forward(toTokens(normed)) : toTokens(this.proj_in.forward(normed));
    for (const block of this.transformer_blocks) h = block.forward(h, context);
    const out = this.proj_out instanceof Linear ? toImage(this.proj_out.forward(h)) : this.proj_out.forward(toImage(h));
    return g.add(out, x, name);
  }
}

/** A down block; CrossAttnDownBlock2D when it has attentions, DownBlock2D otherwise. */
export class DownBlock {
  readonly resnets: ResnetBlock2D[] = [];
  readonly attentions: Transformer2DModel[] = [];
  readonly downsamplers: Downsample2D[] = [];
  constructor(
    readonly s: Scope,
    type: DownBlockType,
    inChannels: number,
    outChannels: number,
    layers: number,
    heads: number,
    transformerLayers: number,
    addDownsample: boolean,
    downsamplePadding: number,
    cfg: BlockSettings,
  ) {
    for (let j = 0; j < layers; j++) {
      this.resnets.push(
        new ResnetBlock2D(s.child('resnets').child(j), j === 0 ? inChannels : outChannels, outChannels, cfg),
      );
      if (type === 'CrossAttnDownBlock2D') {
        this.attentions.push(
          new Transformer2DModel(s.child('attentions').child(j), outChannels, heads, transformerLayers, cfg),
        );
      }
    }
    if (addDownsample)
      this.downsamplers.push(new Downsample2D(s.child('downsamplers').child(0), outChannels, downsamplePadding));
  }

  /** Returns the block output and the skip connections it leaves for the up path, in order. */
  forward(x: string, temb: string, context: string): { out: string; skips: string[] } {
    const skips: string[] = [];
    let h = x;
    this.resnets.forEach((resnet, j) => {
      h = resnet.forward(h, temb);
      if (this.attentions[j]) h = this.attentions[j].forward(h, context);
      skips.push(h);
    });
    for (const down of this.downsamplers) {
      h = down.forward(h);
      skips.push(h);
    }
    return { out: h, skips };
  }
}

/** An up block; CrossAttnUpBlock2D when it has attentions, UpBlock2D otherwise. */
export class UpBlock {
  readonly resnets: ResnetBlock2D[] = [];
  readonly attentions: Transformer2DModel[] = [];
  readonly upsamplers: Upsample2D[] = [];
  constructor(
    readonly s: Scope,
    type: UpBlockType,
    inChannels: number,
    prevOutChannels: number,
    outChannels: number,
    layers: number,
    heads: number,
    transformerLayers: number,
    addUpsample: boolean,
    cfg: BlockSettings,
  ) {
    for (let j = 0; j < layers; j++) {
      // The last resnet takes the skip from the block input side of the matching down block.
      const skipChannels = j === layers - 1 ? inChannels : outChannels;
      const resnetIn = j === 0 ? prevOutChannels : outChannels;
      this.resnets.push(new ResnetBlock2D(s.child('resnets').child(j), resnetIn + skipChannels, outChannels, cfg));
      if (type === 'CrossAttnUpBlock2D') {
        this.attentions.push(
          new Transformer2DModel(s.child('attentions').child(j), outChannels, heads, transformerLayers, cfg),
        );
      }
    }
    if (addUpsample) this.upsamplers.push(new Upsample2D(s.child('upsamplers').child(0), outChannels));
  }

  /** `skips` are consumed from the end; `nextSkip` (the next block's first skip) gives the upsampled size. */
  forward(x: string, skips: string[], temb: string, context: string, nextSkip?: string): string {
    const g = this.s.g;
    let h = x;
    this.resnets.forEach((resnet, j) => {
      const skip = skips[skips.length - 1 - j];
      h = resnet.forward(g.op('Concat', [h, skip], { axis: 1 }, { name: this.s.path }), temb);
      if (this.attentions[j]) h = this.attentions[j].forward(h, context);
    });
    for (const up of this.upsamplers) {
      if (!nextSkip) throw new Error(`${this.s.path}: an up-sampler needs the next skip connection's size`);
      h = up.forward(h, nextSkip);
    }
    return h;
  }
}

export class UNetMidBlock2DCrossAttn {
  readonly resnets: ResnetBlock2D[];
  readonly attentions: Transformer2DModel[];
  constructor(
    readonly s: Scope,
    channels: number,
    heads: number,
    transformerLayers: number,
    scaleFactor: number,
    cfg: BlockSettings,
  ) {
    this.resnets = [0, 1].map(
      (j) => new ResnetBlock2D(s.child('resnets').child(j), channels, channels, cfg, scaleFactor),
    );
    this.attentions = [new Transformer2DModel(s.child('attentions').child(0), channels, heads, transformerLayers, cfg)];
  }

  forward(x: string, temb: string, context: string): string {
    let h = this.resnets[0].forward(x, temb);
    this.attentions.forEach((attn, j) => {
      h = this.resnets[j + 1].forward(attn.forward(h, context), temb);
    });
    return h;
  }
}

export class UNet2DConditionModel {
  readonly conv_in: Conv2d;
  readonly time_proj: Timesteps;
  readonly time_embedding: TimestepEmbedding;
  readonly down_blocks: DownBlock[];
  readonly mid_block: UNetMidBlock2DCrossAttn;
  readonly up_blocks: UpBlock[];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(
    readonly s: Scope,
    readonly cfg: UnetConfig,
  ) {
    const ch = cfg.blockOutChannels;
    const n = ch.length;
    const block: BlockSettings = {
      groups: cfg.normGroups,
      eps: cfg.normEps,
      act: cfg.actFn,
      timeEmbedDim: cfg.timeEmbedDim,
      crossAttentionDim: cfg.crossAttentionDim,
      useLinearProjection: cfg.useLinearProjection,
      upcastAttention: cfg.upcastAttention,
    };
    this.conv_in = new Conv2d(s.child('conv_in'), cfg.inChannels, ch[0], cfg.convInKernel, {
      padding: (cfg.convInKernel - 1) >> 1,
    });
    this.time_proj = new Timesteps(s.child('time_proj'), ch[0], cfg.flipSinToCos, cfg.freqShift);
    this.time_embedding = new TimestepEmbedding(s.child('time_embedding'), ch[0], cfg.timeEmbedDim, cfg.actFn);
    this.down_blocks = cfg.downBlockTypes.map(
      (type, i) =>
        new DownBlock(
          s.child('down_blocks').child(i),
          type,
          ch[Math.max(i - 1, 0)],
          ch[i],
          cfg.layersPerBlock[i],
          cfg.heads[i],
          cfg.transformerLayersPerBlock[i],
          i < n - 1,
          cfg.downsamplePadding,
          block,
        ),
    );
    this.mid_block = new UNetMidBlock2DCrossAttn(
      s.child('mid_block'),
      ch[n - 1],
      cfg.heads[n - 1],
      cfg.transformerLayersPerBlock[n - 1],
      cfg.midBlockScaleFactor,
      block,
    );
    const rev = [...ch].reverse();
    const revHeads = [...cfg.heads].reverse();
    const revLayers = [...cfg.layersPerBlock].reverse();
    this.up_blocks = cfg.upBlockTypes.map(
      (type, i) =>
        new UpBlock(
          s.child('up_blocks').child(i),
          type,
          rev[Math.min(i + 1, n - 1)],
          rev[Math.max(i - 1, 0)],
          rev[i],
          revLayers[i] + 1,
          revHeads[i],
          cfg.reverseTransformerLayersPerBlock[i],
          i < n - 1,
          block,
        ),
    );
    this.conv_norm_out = new GroupNorm(s.child('conv_norm_out'), cfg.normGroups, ch[0], cfg.normEps);
    this.conv_out = new Conv2d(s.child('conv_out'), ch[0], cfg.outChannels, cfg.convOutKernel, {
      padding: (cfg.convOutKernel - 1) >> 1,
    });
  }

  /**
   * sample [B, C, H, W], timestep [1] or [B] (float; one value is broadcast over the batch), context [B, S, Dc]
   * -> [B, C_out, H, W].
   */
  forward(sample: string, timestep: string, context: string): string {
    const g = this.s.g;
    const batch = g.op('Shape', [sample], { start: 0, end: 1 }, { name: 'time_proj' });
    const t = g.op('Expand', [timestep, batch], {}, { name: 'time_proj' });
    const temb = this.time_embedding.forward(this.time_proj.forward(t));

    const x = this.cfg.centerInputSample ? g.add(g.mul(sample, g.scalarF32(2)), g.scalarF32(-1)) : sample;
    let h = this.conv_in.forward(x);
    const skips = [h];
    for (const block of this.down_blocks) {
      const r = block.forward(h, temb, context);
      h = r.out;
      skips.push(...r.skips);
    }
    h = this.mid_block.forward(h, temb, context);
    for (const block of this.up_blocks) {
      const mine = skips.splice(skips.length - block.resnets.length);
      h = block.forward(h, mine, temb, context, skips[skips.length - 1]);
    }
    h = activation(this.s.child('conv_act'), this.cfg.actFn, this.conv_norm_out.forward(h));
    return this.conv_out.forward(h);
  }
}

/**
 * The UNet graph: inputs `sample` [batch, C, height, width] (any height and width), `timestep` float32 [1 or batch]
 * (a scalar timestep is passed as a one-element tensor and broadcast over the batch), `encoder_hidden_states`
 * [batch, sequence, cross_attention_dim]; output `out_sample` [batch, C_out, height, width].
 * Every checkpoint tensor must be consumed: a leftover key means the config does not describe the checkpoint.
 */
export function buildUnetGraph(config: Config, weights: WeightStore): GraphBuilder {
  const root = Scope.root(new GraphBuilder(), weights);
  defineUnetGraph(root, parseUnetConfig(config));
  root.refuseUnused('UNet');
  return root.g;
}

/** The UNet's inputs, module tree and output, added to the graph of `root`. */
export function defineUnetGraph(root: Scope, cfg: UnetConfig): void {
  const g = root.g;
  const model = new UNet2DConditionModel(root, cfg);
  const sample = g.input('sample', 'float32', ['batch', cfg.inChannels, 'height', 'width']);
  const timestep = g.input('timestep', 'float32', ['timesteps']);
  const context = g.input('encoder_hidden_states', 'float32', ['batch', 'sequence', cfg.crossAttentionDim]);
  g.output(model.forward(sample, timestep, context), 'out_sample', 'float32', [
    'batch',
    cfg.outChannels,
    'height',
    'width',
  ]);
}

/** The UNet graph of a diffusers `unet/` folder (config.json + diffusion_pytorch_model[.fp16].safetensors). */
export function loadUnetGraph(dir: string): GraphBuilder {
  const config = Config.read(join(dir, 'config.json'));
  const weights = SafetensorsWeights.open(weightFiles(dir, 'diffusion_pytorch_model'));
  try {
    return buildUnetGraph(config, weights);
  } finally {
    weights.close();
  }
}
