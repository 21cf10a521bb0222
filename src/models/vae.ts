import { join } from 'node:path';
import { GraphBuilder } from '../onnx/graph.js';
import { Config } from '../core/config.js';
import { Conv2d, GroupNorm, activation, attention } from './nn.js';
import { Downsample2D, ResnetBlock2D, Upsample2D, type ResnetSettings } from './resnet.js';
import { Scope } from './scope.js';
import { SafetensorsWeights, weightFiles, type WeightStore } from '../core/weights.js';

/**
 * diffusers' `AutoencoderKL` (the Stable Diffusion VAE) as two ONNX graphs, encoder and decoder. Each class owns its
 * children under diffusers' module names, so checkpoint keys follow from the tree.
 *
 * Latent spaces: the encoder graph returns the raw posterior (`latent_mean`, `latent_std`) in the VAE's own space;
 * a caller that wants UNet-space latents computes `(mean + std * noise - shift_factor) * scaling_factor`.
 * The decoder graph takes UNet-space latents and undoes that itself (`latents / scaling_factor + shift_factor`),
 * as diffusers' pipelines do before `vae.decode`, and returns the image in [-1, 1] (not clamped).
 */

export interface VaeConfig {
  file: string;
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  normNumGroups: number;
  actFn: string;
  midBlockAddAttention: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
  scalingFactor: number;
  /** null for SD 1.x / 2.x / XL; set for SD3 and Flux VAEs. */
  shiftFactor: number | null;
}

/** Every norm in the VAE uses this epsilon (diffusers hard-codes it in Encoder, Decoder and their blocks). */
const EPS = 1e-6;

export function readVaeConfig(c: Config): VaeConfig {
  const cls = c.str('_class_name', 'AutoencoderKL');
  if (cls !== 'AutoencoderKL') throw new Error(`${c.file}: _class_name is ${cls}; only AutoencoderKL is supported`);
  const blockOutChannels = c.ints('block_out_channels', [64]);
  const blocks = blockOutChannels.length;
  for (const [key, want] of [
    ['down_block_types', 'DownEncoderBlock2D'],
    ['up_block_types', 'UpDecoderBlock2D'],
  ] as const) {
    const types = c.strs(key, Array(blocks).fill(want));
    if (types.length !== blocks || types.some((t) => t !== want)) {
      throw new Error(
        `${c.file}: ${key} is ${JSON.stringify(types)}; expected ${blocks} × ${want} (one per ` +
          `block_out_channels entry)`,
      );
    }
  }
  return {
    file: c.file,
    inChannels: c.int('in_channels', 3),
    outChannels: c.int('out_channels', 3),
    latentChannels: c.int('latent_channels', 4),
    blockOutChannels,
    layersPerBlock: c.int('layers_per_block', 1),
    normNumGroups: c.int('norm_num_groups', 32),
    actFn: c.str('act_fn', 'silu'),
    midBlockAddAttention: c.bool('mid_block_add_attention', true),
    useQuantConv: c.bool('use_quant_conv', true),
    usePostQuantConv: c.bool('use_post_quant_conv', true),
    scalingFactor: c.num('scaling_factor', 0.18215),
    shiftFactor: c.has('shift_factor') ? c.num('shift_factor') : null,
  };
}

/** The VAE's resnets: no timestep embedding, the config's groups and activation. */
function resnetSettings(cfg: VaeConfig): ResnetSettings {
  return { groups: cfg.normNumGroups, eps: EPS, act: cfg.actFn, timeEmbedDim: null };
}

/**
 * A projection of the mid-block attention. diffusers stores it as Linear [C, C]; checkpoints converted from the
 * original layout may keep the 1×1 conv [C, C, 1, 1], which is the same matrix.
 */
class Projection {
  readonly weight: string;
  readonly bias: string;
  constructor(
    readonly s: Scope,
    channels: number,
  ) {
    const asConv = s.weights.shape(s.key('weight'))?.length === 4;
    const w = s.param('weight', asConv ? [channels, channels, 1, 1] : [channels, channels]);
    this.weight = asConv ? s.g.reshape(w, [channels, channels], s.path) : w;
    this.bias = s.param('bias', [channels]);
  }

  /** x [B, S, C] -> x W^T + b (the Transpose of a constant is folded by ORT). */
  forward(x: string): string {
    const g = this.s.g;
    return g.add(g.matmul(x, g.transpose(this.weight, [1, 0], this.s.path), this.s.path), this.bias, this.s.path);
  }
}

/** diffusers' `Attention` as the VAE's mid block has it: one-head self-attention over the pixels, and a residual. */
class Attention {
  readonly group_norm: GroupNorm;
  readonly to_q: Projection;
  readonly to_k: Projection;
  readonly to_v: Projection;
  readonly to_out: Projection;

  constructor(
    readonly s: Scope,
    cfg: VaeConfig,
    readonly channels: number,
  ) {
    this.group_norm = new GroupNorm(s.child('group_norm'), cfg.normNumGroups, channels, EPS);
    // diffusers before 0.15 named the projections query/key/value/proj_attn; such checkpoints still circulate.
    const legacy = !s.has('to_q.weight') && s.has('query.weight');
    const [q, k, v, out] = legacy ? ['query', 'key', 'value', 'proj_attn'] : ['to_q', 'to_k', 'to_v', 'to_out.0'];
    this.to_q = new Projection(s.child(q), channels);
    this.to_k = new Projection(s.child(k), channels);
    this.to_v = new Projection(s.child(v), channels);
    this.to_out = new Projection(s.child(out), channels);
  }

  forward(x: string): string {
    const g = this.s.g;
    const name = this.s.path;
    const shape = g.op('Shape', [x], {}, { name });
    // [B, C, H, W] -> [B, HW, C]: each pixel is a token.
    const tokens = g.transpose(g.reshape(this.group_norm.forward(x), [0, this.channels, -1], name), [0, 2, 1], name);
    const q = this.to_q.forward(tokens);
    const k = this.to_k.forward(tokens);
    const v = this.to_v.forward(tokens);
    const attended = this.to_out.forward(attention(this.s, q, k, v, 1, this.channels));
    const back = g.op('Reshape', [g.transpose(attended, [0, 2, 1], name), shape], {}, { name });
    return g.add(back, x, name);
  }
}

/** diffusers' `UNetMidBlock2D`: resnet, (attention), resnet. */
class UNetMidBlock2D {
  readonly resnets: ResnetBlock2D[];
  readonly attentions: Attention[];
  constructor(s: Scope, cfg: VaeConfig, channels: number) {
    const resnets = s.child('resnets');
    this.resnets = [0, 1].map((i) => new ResnetBlock2D(resnets.child(i), channels, channels, resnetSettings(cfg)));
    this.attentions = cfg.midBlockAddAttention ? [new Attention(s.child('attentions').child(0), cfg, channels)] : [];
  }

  forward(x: string): string {
    let h = this.resnets[0].forward(x);
    for (const attn of this.attentions) h = attn.forward(h);
    return this.resnets[1].forward(h);
  }
}

/** `count` resnets under `<s>.resnets`, the first taking `inC` channels to `outC`. */
function resnetStack(s: Scope, cfg: VaeConfig, count: number, inC: number, outC: number): ResnetBlock2D[] {
  const resnets = s.child('resnets');
  const settings = resnetSettings(cfg);
  return Array.from(
    { length: count },
    (_, i) => new ResnetBlock2D(resnets.child(i), i === 0 ? inC : outC, outC, settings),
  );
}

/** diffusers' `DownEncoderBlock2D`: resnets, then a stride-2 downsampler except in the last block. */
class DownEncoderBlock2D {
  readonly resnets: ResnetBlock2D[];
  readonly downsamplers: Downsample2D[];
  constructor(s: Scope, cfg: VaeConfig, inC: number, outC: number, addDownsample: boolean) {
    this.resnets = resnetStack(s, cfg, cfg.layersPerBlock, inC, outC);
    // The encoder's downsamplers have padding 0 (diffusers' downsample_padding=0 for DownEncoderBlock2D).
    this.downsamplers = addDownsample ? [new Downsample2D(s.child('downsamplers').child(0), outC, 0)] : [];
  }

  forward(x: string): string {
    const h = this.resnets.reduce((v, r) => r.forward(v), x);
    return this.downsamplers.reduce((v, d) => d.forward(v), h);
  }
}

/** diffusers' `UpDecoderBlock2D`: one resnet more than the encoder's, then a 2× upsampler except in the last. */
class UpDecoderBlock2D {
  readonly resnets: ResnetBlock2D[];
  readonly upsamplers: Upsample2D[];
  constructor(s: Scope, cfg: VaeConfig, inC: number, outC: number, addUpsample: boolean) {
    this.resnets = resnetStack(s, cfg, cfg.layersPerBlock + 1, inC, outC);
    this.upsamplers = addUpsample ? [new Upsample2D(s.child('upsamplers').child(0), outC)] : [];
  }

  forward(x: string): string {
    const h = this.resnets.reduce((v, r) => r.forward(v), x);
    return this.upsamplers.reduce((v, u) => u.forward(v), h);
  }
}

class Encoder {
  readonly conv_in: Conv2d;
  readonly down_blocks: DownEncoderBlock2D[];
  readonly mid_block: UNetMidBlock2D;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(
    readonly s: Scope,
    readonly cfg: VaeConfig,
  ) {
    const ch = cfg.blockOutChannels;
    const last = ch[ch.length - 1];
    this.conv_in = new Conv2d(s.child('conv_in'), cfg.inChannels, ch[0], 3, { padding: 1 });
    const blocks = s.child('down_blocks');
    this.down_blocks = ch.map(
      (outC, i) => new DownEncoderBlock2D(blocks.child(i), cfg, i === 0 ? ch[0] : ch[i - 1], outC, i < ch.length - 1),
    );
    this.mid_block = new UNetMidBlock2D(s.child('mid_block'), cfg, last);
    this.conv_norm_out = new GroupNorm(s.child('conv_norm_out'), cfg.normNumGroups, last, EPS);
    // double_z: the last conv emits mean and log-variance stacked on the channel axis.
    this.conv_out = new Conv2d(s.child('conv_out'), last, 2 * cfg.latentChannels, 3, { padding: 1 });
  }

  forward(image: string): string {
    let h = this.conv_in.forward(image);
    for (const b of this.down_blocks) h = b.forward(h);
    h = this.mid_block.forward(h);
    return this.conv_out.forward(activation(this.s, this.cfg.actFn, this.conv_norm_out.forward(h)));
  }
}

class Decoder {
  readonly conv_in: Conv2d;
  readonly mid_block: UNetMidBlock2D;
  readonly up_blocks: UpDecoderBlock2D[];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(
    readonly s: Scope,
    readonly cfg: VaeConfig,
  ) {
    const rev = [...cfg.blockOutChannels].reverse();
    this.conv_in = new Conv2d(s.child('conv_in'), cfg.latentChannels, rev[0], 3, { padding: 1 });
    this.mid_block = new UNetMidBlock2D(s.child('mid_block'), cfg, rev[0]);
    const blocks = s.child('up_blocks');
    this.up_blocks = rev.map(
      (outC, i) => new UpDecoderBlock2D(blocks.child(i), cfg, i === 0 ? rev[0] : rev[i - 1], outC, i < rev.length - 1),
    );
    const first = cfg.blockOutChannels[0];
    this.conv_norm_out = new GroupNorm(s.child('conv_norm_out'), cfg.normNumGroups, first, EPS);
    this.conv_out = new Conv2d(s.child('conv_out'), first, cfg.outChannels, 3, { padding: 1 });
  }

  forward(z: string): string {
    let h = this.mid_block.forward(this.conv_in.forward(z));
    for (const b of this.up_blocks) h = b.forward(h);
    return this.conv_out.forward(activation(this.s, this.cfg.actFn, this.conv_norm_out.forward(h)));
  }
}

/**
 * `image` float32 [batch, in_channels, H, W] in [-1, 1] → `latent_mean`, `latent_std` [batch, latent_channels,
 * H/8, W/8] (for 4 blocks) of the diagonal Gaussian posterior, in VAE space (not multiplied by scaling_factor).
 * std = exp(0.5 · clamp(logvar, -30, 20)), as diffusers' DiagonalGaussianDistribution.
 */
export function buildVaeEncoderGraph(cfg: VaeConfig, weights: WeightStore): GraphBuilder {
  const g = new GraphBuilder();
  const root = Scope.root(g, weights);
  const encoder = new Encoder(root.child('encoder'), cfg);
  const L = cfg.latentChannels;
  const quant = cfg.useQuantConv ? new Conv2d(root.child('quant_conv'), 2 * L, 2 * L, 1) : undefined;
  root.refuseUnused('VAE encoder', [/^decoder\./, /^post_quant_conv\./]);

  const image = g.input('image', 'float32', ['batch', cfg.inChannels, 'height', 'width']);
  let moments = encoder.forward(image);
  if (quant) moments = quant.forward(moments);
  const [mean, logvar] = g.opN('Split', [moments, g.constI64([L, L])], { axis: 1 }, { name: 'posterior', outputs: 2 });
  const clamped = g.op('Clip', [logvar, g.scalarF32(-30), g.scalarF32(20)], {}, { name: 'posterior' });
  const std = g.op('Exp', [g.mul(clamped, g.scalarF32(0.5), 'posterior')], {}, { name: 'posterior' });
  const latentDims = ['batch', L, 'latent_height', 'latent_width'];
  g.output(mean, 'latent_mean', 'float32', latentDims);
  g.output(std, 'latent_std', 'float32', latentDims);
  return g;
}

/**
 * `latents` float32 [batch, latent_channels, h, w] in UNet space (what the denoising loop ends with) → `image`
 * [batch, out_channels, 8h, 8w] (for 4 blocks) in [-1, 1], unclamped. The graph divides by scaling_factor (and adds
 * shift_factor when the config has one) before post_quant_conv, so callers feed the scheduler's output directly.
 */
export function buildVaeDecoderGraph(cfg: VaeConfig, weights: WeightStore): GraphBuilder {
  const g = new GraphBuilder();
  const root = Scope.root(g, weights);
  const L = cfg.latentChannels;
  const postQuant = cfg.usePostQuantConv ? new Conv2d(root.child('post_quant_conv'), L, L, 1) : undefined;
  const decoder = new Decoder(root.child('decoder'), cfg);
  root.refuseUnused('VAE decoder', [/^encoder\./, /^quant_conv\./]);

  const latents = g.input('latents', 'float32', ['batch', L, 'latent_height', 'latent_width']);
  let z = g.op('Div', [latents, g.scalarF32(cfg.scalingFactor)], {}, { name: 'unscale' });
  if (cfg.shiftFactor !== null) z = g.add(z, g.scalarF32(cfg.shiftFactor), 'unscale');
  if (postQuant) z = postQuant.forward(z);
  g.output(decoder.forward(z), 'image', 'float32', ['batch', cfg.outChannels, 'height', 'width']);
  return g;
}

export interface VaeModel {
  config: VaeConfig;
  weights: SafetensorsWeights;
}

/**
 * A diffusers `vae/` folder: config.json plus diffusion_pytorch_model(.fp16).safetensors. Close `weights` after
 * building.
 */
export function loadVae(dir: string): VaeModel {
  const config = readVaeConfig(Config.read(join(dir, 'config.json')));
  return { config, weights: SafetensorsWeights.open(weightFiles(dir, 'diffusion_pytorch_model')) };
}
