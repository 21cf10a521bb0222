import { f32, numel, type F32Tensor } from '../core/tensor.js';
import type { GraphBuilder } from '../onnx/graph.js';
import type { Rng } from '../core/rng.js';

/**
 * LoRA (peft layout) on a built graph: each adapted weight W stops being a constant and becomes
 * W + (alpha / r) · B·A computed from two new graph inputs, so the training graph differentiates A and B only.
 * Linear: lora_A [r, in], lora_B [out, r]. Conv2d: lora_A [r, in, k, k] (a conv with the layer's kernel),
 * lora_B [out, r, 1, 1] (a 1×1 conv); their composition is the conv whose kernel is B·A over (in, k, k).
 * Dropout on the LoRA input has no merged-weight form, so only dropout 0 is offered.
 */

export interface LoraOptions {
  rank: number;
  alpha: number;
  /** Module names (the last part of the path) to adapt. */
  targets: string[];
}

/** The modules Safe-CLIP's released script adapts. */
export const DEFAULT_TARGETS = ['k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2', 'patch_embedding'];

export const scaling = (o: LoraOptions) => o.alpha / o.rank;

/** peft's key for a module's adapter matrix, as adapter_model.safetensors stores it. */
export function loraKey(module: string, which: 'A' | 'B'): string {
  return `base_model.model.${module}.lora_${which}.weight`;
}

/** The module paths whose `.weight` a LoRA adapts: 2-D (Linear) or 4-D (Conv2d) weights of the target modules. */
export function loraModules(
  keys: Iterable<string>,
  shapeOf: (key: string) => number[],
  opts: LoraOptions,
  within: (key: string) => boolean,
): string[] {
  const modules: string[] = [];
  for (const key of keys) {
    if (!key.endsWith('.weight') || !within(key)) continue;
    const module = key.slice(0, -'.weight'.length);
    const name = module.slice(module.lastIndexOf('.') + 1);
    const rank = shapeOf(key).length;
    if (opts.targets.includes(name) && (rank === 2 || rank === 4)) modules.push(module);
  }
  return modules;
}

export function loraShapes(weightShape: number[], rank: number): { A: number[]; B: number[] } {
  const [out, inp, ...kernel] = weightShape;
  return kernel.length ? { A: [rank, inp, ...kernel], B: [out, rank, 1, 1] } : { A: [rank, inp], B: [out, rank] };
}

/**
 * peft's initialisation: A kaiming-uniform with a = sqrt(5) (bound 1/sqrt(fan_in)), B zero, so training starts at W.
 */
export function initLora(weightShape: number[], rank: number, rng: Rng): { A: F32Tensor; B: F32Tensor } {
  const shapes = loraShapes(weightShape, rank);
  const fanIn = numel(shapes.A) / rank;
  const bound = 1 / Math.sqrt(fanIn);
  const a = new Float32Array(numel(shapes.A));
  for (let i = 0; i < a.length; i++) a[i] = (rng.next() * 2 - 1) * bound;
  return { A: f32(a, shapes.A), B: f32(new Float32Array(numel(shapes.B)), shapes.B) };
}

/**
 * Rewrite `g` so each module's weight initializer is computed from its LoRA inputs; returns the input names by
 * module. The new nodes go first, ahead of every consumer of the weight.
 */
export function applyLora(
  g: GraphBuilder,
  modules: string[],
  opts: LoraOptions,
): Map<string, { A: string; B: string }> {
  const start = g.nodes.length;
  const made = new Map<string, { A: string; B: string }>();
  for (const module of modules) {
    const key = `${module}.weight`;
    const base = g.initializers.get(key);
    if (!base) throw new Error(`LoRA: ${key} is not a constant weight of the graph`);
    const shapes = loraShapes(base.shape, opts.rank);
    const A = g.input(loraKey(module, 'A'), 'float32', shapes.A);
    const B = g.input(loraKey(module, 'B'), 'float32', shapes.B);
    g.initializers.delete(key);
    const frozen = g.initializer(`${key}.base`, base);
    const out = base.shape[0];
    const a2 = g.reshape(A, [opts.rank, numel(base.shape) / out], module);
    const b2 = g.reshape(B, [out, opts.rank], module);
    const delta = g.reshape(g.matmul(b2, a2, module), base.shape, module);
    const scaled = g.mul(delta, g.scalarF32(scaling(opts)), module);
    g.nodes.push({ op: 'Add', domain: '', name: `${key}/lora`, inputs: [frozen, scaled], outputs: [key], attrs: {} });
    made.set(module, { A, B });
  }
  g.nodes.unshift(...g.nodes.splice(start));
  return made;
}

/** W + (alpha / r) · B·A in float32, for export. */
export function mergeLora(weight: F32Tensor, A: F32Tensor, B: F32Tensor, opts: LoraOptions): F32Tensor {
  const out = weight.shape[0];
  const cols = numel(weight.shape) / out;
  const r = opts.rank;
  const s = scaling(opts);
  const merged = new Float32Array(weight.data);
  for (let o = 0; o < out; o++) {
    for (let c = 0; c < cols; c++) {
      let sum = 0;
      for (let k = 0; k < r; k++) sum += B.data[o * r + k] * A.data[k * cols + c];
      merged[o * cols + c] += s * sum;
    }
  }
  return f32(merged, weight.shape);
}
