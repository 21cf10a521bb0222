import { activation, Conv2d, GroupNorm, Linear } from './nn.js';
import type { Scope } from './scope.js';

/**
 * The convolutional blocks the UNet and the VAE share, as diffusers shares them (`models/resnet.py`,
 * `downsampling.py`, `upsampling.py`): one class each, fields named as the checkpoint's keys.
 */

export interface ResnetSettings {
  groups: number;
  eps: number;
  act: string;
  /** Width of the timestep embedding added after conv1; null where there is none (the VAE's blocks). */
  timeEmbedDim: number | null;
}

export class ResnetBlock2D {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly time_emb_proj?: Linear;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut?: Conv2d;
  constructor(
    readonly s: Scope,
    inChannels: number,
    outChannels: number,
    readonly cfg: ResnetSettings,
    readonly outputScaleFactor = 1,
  ) {
    this.norm1 = new GroupNorm(s.child('norm1'), cfg.groups, inChannels, cfg.eps);
    this.conv1 = new Conv2d(s.child('conv1'), inChannels, outChannels, 3, { padding: 1 });
    if (cfg.timeEmbedDim !== null) {
      this.time_emb_proj = new Linear(s.child('time_emb_proj'), cfg.timeEmbedDim, outChannels);
    }
    this.norm2 = new GroupNorm(s.child('norm2'), cfg.groups, outChannels, cfg.eps);
    this.conv2 = new Conv2d(s.child('conv2'), outChannels, outChannels, 3, { padding: 1 });
    if (inChannels !== outChannels) {
      this.conv_shortcut = new Conv2d(s.child('conv_shortcut'), inChannels, outChannels, 1);
    }
  }

  /** x [B, Cin, H, W], temb [B, T] (only where the block has time_emb_proj) -> [B, Cout, H, W] */
  forward(x: string, temb?: string): string {
    const { s, cfg } = this;
    const g = s.g;
    let h = this.conv1.forward(activation(s, cfg.act, this.norm1.forward(x)));
    if (this.time_emb_proj) {
      if (temb === undefined) throw new Error(`${s.path}: this block adds a timestep embedding and none was given`);
      const t = this.time_emb_proj.forward(activation(s, cfg.act, temb));
      h = g.add(h, g.unsqueeze(t, [2, 3], s.path), s.path);
    }
    h = this.conv2.forward(activation(s, cfg.act, this.norm2.forward(h)));
    const skip = this.conv_shortcut ? this.conv_shortcut.forward(x) : x;
    const out = g.add(skip, h, s.path);
    return this.outputScaleFactor === 1 ? out : g.mul(out, g.scalarF32(1 / this.outputScaleFactor), s.path);
  }
}

/**
 * Stride-2 3×3 conv. With padding 0 (the VAE's encoder) diffusers pads one zero row and column at the bottom and
 * right only, so that odd sizes round up; the conv's own asymmetric pads do that without a separate Pad.
 */
export class Downsample2D {
  readonly conv: Conv2d;
  constructor(
    readonly s: Scope,
    channels: number,
    padding: number,
  ) {
    const pads: [number, number, number, number] = padding === 0 ? [0, 0, 1, 1] : [padding, padding, padding, padding];
    this.conv = new Conv2d(s.child('conv'), channels, channels, 3, { stride: 2, padding: pads });
  }

  forward(x: string): string {
    return this.conv.forward(x);
  }
}

/** Nearest-neighbour upsampling, then a 3×3 conv (diffusers' Upsample2D with use_conv). */
export class Upsample2D {
  readonly conv: Conv2d;
  constructor(
    readonly s: Scope,
    channels: number,
  ) {
    this.conv = new Conv2d(s.child('conv'), channels, channels, 3, { padding: 1 });
  }

  /**
   * Twice the size, or, given `like` (the UNet's skip connection it will be joined with), that tensor's spatial size
   * as diffusers' `upsample_size` does: an odd-sized skip gets its odd size back.
   */
  forward(x: string, like?: string): string {
    const g = this.s.g;
    const name = this.s.path;
    const resize = { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' };
    if (!like) return this.conv.forward(g.op('Resize', [x, '', g.constF32([1, 1, 2, 2])], resize, { name }));
    const batchAndChannels = g.op('Shape', [x], { start: 0, end: 2 }, { name });
    const spatial = g.op('Shape', [like], { start: 2 }, { name });
    const sizes = g.op('Concat', [batchAndChannels, spatial], { axis: 0 }, { name });
    return this.conv.forward(g.op('Resize', [x, '', '', sizes], resize, { name }));
  }
}
