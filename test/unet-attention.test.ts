import test from 'ava';
import { Config } from '../src/core/config.js';
import { Scope } from '../src/models/scope.js';
import { SafetensorsFile } from '../src/core/safetensors.js';
import type { F32Tensor } from '../src/core/tensor.js';
import { defineUnetGraph, loadUnetGraph, parseUnetConfig } from '../src/models/unet.js';
import { SafetensorsWeights, weightFiles } from '../src/core/weights.js';
import { convertToFloat16 } from '../src/onnx/fp16.js';
import { GraphBuilder, type Node } from '../src/onnx/graph.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';
import { fixture } from './fixtures.js';

const TINY_UNET = fixture('tiny-sd', 'unet');

function tinyConfig(patch: Record<string, unknown>): Config {
  const base = Config.read(fixture('tiny-sd', 'unet', 'config.json'));
  return new Config(base.file, { ...base.raw, ...patch });
}

/** The tiny-sd UNet graph under `patch`, every unmasked attention lowered to one MultiHeadAttention node. */
function fusedGraph(patch: Record<string, unknown>): GraphBuilder {
  const weights = SafetensorsWeights.open(weightFiles(TINY_UNET, 'diffusion_pytorch_model'));
  try {
    const root = Scope.root(new GraphBuilder(), weights, '', { attentionKernel: 'fused' });
    defineUnetGraph(root, parseUnetConfig(tinyConfig(patch)));
    return root.g;
  } finally {
    weights.close();
  }
}

/** Heads of each attention module's MultiHeadAttention node, by module path (`…transformer_blocks.0.attn1`). */
function headsByModule(g: GraphBuilder): Map<string, number> {
  const heads = new Map<string, number>();
  for (const n of g.nodes.filter((n) => n.op === 'MultiHeadAttention')) {
    heads.set(n.name.split('/')[0], n.attrs.num_heads as number);
  }
  return heads;
}

test('per-block head counts: down blocks in order, the mid block the last, up blocks reversed', (t) => {
  // tiny-sd's own config says 8 everywhere; distinct counts per block show which block reads which entry.
  const heads = headsByModule(fusedGraph({ num_attention_heads: [1, 2, 4, 8], attention_head_dim: 64 }));
  const want: Record<string, number> = {
    'down_blocks.0': 1,
    'down_blocks.1': 2,
    'down_blocks.2': 4,
    mid_block: 8,
    'up_blocks.1': 4,
    'up_blocks.2': 2,
    'up_blocks.3': 1,
  };
  const blockOf = (module: string) => module.split('.attentions.')[0];
  t.is(heads.size, 2 * 2 * 3 + 2 + 2 * 3 * 3, 'self- and cross-attention of every transformer block');
  for (const [module, n] of heads) t.is(n, want[blockOf(module)], module);
  t.deepEqual(new Set([...heads.keys()].map(blockOf)), new Set(Object.keys(want)));
});

/** The attention MatMuls of a float16 graph, found around each Softmax, and whether a node computes in float32. */
function attentionNodes(g: GraphBuilder) {
  const producer = new Map(g.nodes.flatMap((m) => m.outputs.map((o) => [o, m] as const)));
  /** The node behind value `v`, looking through the Casts the conversion inserts. */
  const source = (v: string): Node | undefined => {
    let n = producer.get(v);
    while (n?.op === 'Cast') n = producer.get(n.inputs[0]);
    return n;
  };
  const softmaxes = g.nodes.filter((n) => n.op === 'Softmax');
  return {
    /** Q·K of each plain attention: Softmax <- scale Mul <- MatMul. */
    scores: softmaxes.map((s) => source(source(s.inputs[0])!.inputs[0])!),
    /** probabilities · V: the MatMuls that read a Softmax. */
    probsV: g.nodes.filter((n) => n.op === 'MatMul' && softmaxes.includes(source(n.inputs[0])!)),
    /** Every input of `n` is a Cast to float32: what the conversion puts before a node it keeps in float32. */
    readsFloat32: (n: Node) => n.inputs.every((x) => producer.get(x)?.op === 'Cast' && producer.get(x)!.attrs.to === 1),
  };
}

const golden = SafetensorsFile.open(fixture('unet_golden.safetensors'));
const feeds = () => ({
  sample: golden.readF32('sample'),
  timestep: { dtype: 'F32' as const, shape: [3], data: Float32Array.of(999, 500, 1) },
  encoder_hidden_states: golden.readF32('encoder_hidden_states'),
});

function maxAbsDiff(a: F32Tensor, b: F32Tensor): number {
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(a.data[i] - b.data[i]));
  return m;
}

test('upcast_attention: a float16 UNet computes attention scores (Q·K) in float32 only where asked', async (t) => {
  const build = (upcast: boolean) => {
    const weights = SafetensorsWeights.open(weightFiles(TINY_UNET, 'diffusion_pytorch_model'));
    try {
      const root = Scope.root(new GraphBuilder(), weights);
      defineUnetGraph(root, parseUnetConfig(tinyConfig({ upcast_attention: upcast })));
      return root.g;
    } finally {
      weights.close();
    }
  };
  const reference = (await run(await createSession(serializeModel(loadUnetGraph(TINY_UNET))), feeds())).out_sample;
  for (const upcast of [true, false]) {
    const g = convertToFloat16(build(upcast));
    const { scores, probsV, readsFloat32 } = attentionNodes(g);
    const transformerBlocks = 2 * 3 + 1 + 3 * 3;
    // Cross-attention (77 keys) is lowered plain: its Q·K MatMul reads float32 with upcast, float16 without.
    t.is(scores.length, transformerBlocks);
    for (const m of scores) t.is(m.op, 'MatMul');
    for (const m of scores) t.is(readsFloat32(m), upcast, m.name);
    // diffusers casts the probabilities back before multiplying with V: that MatMul is float16 either way.
    t.is(probsV.length, transformerBlocks);
    for (const m of probsV) t.false(readsFloat32(m), m.name);
    // Self-attention is one fused node, which upcast keeps float32 as a whole.
    const fused = g.nodes.filter((n) => n.op === 'MultiHeadAttention');
    t.is(fused.length, transformerBlocks);
    for (const n of fused) t.is(readsFloat32(n), upcast, n.name);
    const out = (await run(await createSession(serializeModel(g)), feeds())).out_sample;
    const err = maxAbsDiff(out, reference);
    // Measured 6.0e-3 (upcast) and 6.2e-3 (not) on the tiny-sd golden inputs.
    t.log(`upcast_attention ${upcast}: float16 vs float32 max abs error ${err.toExponential(2)}`);
    t.true(err < 5e-2, `${err}`);
  }
});
