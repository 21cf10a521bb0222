import { Config } from '../core/config.js';
import { Scope } from '../models/scope.js';
import { f32, numel } from '../core/tensor.js';
import { defineUnetGraph, parseUnetConfig, SD15_UNET_CONFIG } from '../models/unet.js';
import type { AttentionKernel } from '../models/scope.js';
import { MemoryWeights } from '../core/weights.js';
import { GraphBuilder } from '../onnx/graph.js';

/** xorshift32 values in [-0.05, 0.05): small enough that 50 layers of random weights stay finite. */
export function randomPool(length: number, seed: number): Float32Array {
  const pool = new Float32Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pool[i] = ((x >>> 0) / 2 ** 32 - 0.5) * 0.1;
  }
  return pool;
}

/**
 * SD 1.5's UNet architecture with made-up weights: views at scattered offsets into one 128 MB random pool, so the
 * 3.4 GB graph costs little memory until it is serialised. Speed does not depend on the weight values.
 * `attentionKernel` forces one attention lowering (default: the modules' own choices).
 */
export function sd15UnetGraph(attentionKernel?: AttentionKernel): GraphBuilder {
  const pool = randomPool(32 << 20, 1234);
  let made = 0;
  const g = new GraphBuilder();
  const root = Scope.root(g, new MemoryWeights(new Map()), '', {
    fabricate: (_key, shape) => {
      const n = numel(shape);
      const offset = (made++ * 7_919_011) % (pool.length - n);
      return f32(pool.subarray(offset, offset + n), shape);
    },
    attentionKernel,
  });
  defineUnetGraph(root, parseUnetConfig(Config.read(SD15_UNET_CONFIG)));
  return g;
}

export const SD15_CONTEXT = { tokens: 77, dim: 768 };

/** UNet inputs for `batch` latents of `size`x`size`. */
export function sd15Inputs(batch: number, size: number) {
  const n = batch * 4 * size * size;
  return {
    sample: f32(
      Float32Array.from({ length: n }, (_, i) => Math.sin(i)),
      [batch, 4, size, size],
    ),
    timestep: f32(new Float32Array(batch).fill(500), [batch]),
    encoder_hidden_states: f32(
      Float32Array.from({ length: batch * 77 * 768 }, (_, i) => Math.cos(i * 0.01)),
      [batch, 77, 768],
    ),
  };
}
