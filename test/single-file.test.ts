import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../src/core/safetensors.js';
import { f32, numel, type F32Tensor, type Tensor } from '../src/core/tensor.js';
import { MemoryWeights, SafetensorsWeights, type WeightStore } from '../src/core/weights.js';
import { ClipTextTransformer, readClipTextConfig } from '../src/models/clip.js';
import { Scope, type ScopeOptions } from '../src/models/scope.js';
import {
  readSingleFile,
  singleFileTextWeights,
  singleFileUnetWeights,
  singleFileVaeWeights,
} from '../src/models/single-file.js';
import { defineUnetGraph, parseUnetConfig } from '../src/models/unet.js';
import { GraphBuilder } from '../src/onnx/graph.js';
import { LocalEngine } from '../src/pipeline/engine.js';
import { manifestForModel } from '../src/pipeline/manifest.js';
import { openPipelineSource } from '../src/pipeline/source.js';
import { PromptEncoder } from '../src/pipeline/text-encoder.js';
import { Tokenizer } from '../src/pipeline/tokenizer.js';
import { fixture } from './fixtures.js';
import { maxAbsError } from './helpers/compare.js';
import { goldenRunError, PIPELINE_TOL, runs, tinySdConfigFolder } from './helpers/pipeline-golden.js';

process.env.SAFE_SD_CACHE ??= mkdtempSync(join(tmpdir(), 'graph-cache-'));

const SINGLE = fixture('tiny-sd-single-file.safetensors');
const configDir = tinySdConfigFolder();
const engine = new LocalEngine(manifestForModel(SINGLE, { config: configDir }));
test.after.always(() => engine.close());

function sameTensors(
  t: import('ava').ExecutionContext,
  view: WeightStore & { close(): void },
  reference: string,
): void {
  const ref = SafetensorsWeights.open([reference]);
  try {
    t.deepEqual([...view.keys()].sort(), [...ref.keys()].sort());
    for (const k of ref.keys()) {
      const a = view.get(k);
      const b = ref.get(k);
      // The VAE attention projections are 1×1 convolutions in the single file, linear layers in diffusers'.
      t.is(a.data.length, b.data.length, k);
      t.true(
        a.data.every((v, i) => v === b.data[i]),
        k,
      );
    }
  } finally {
    ref.close();
    view.close();
  }
}

test('the single file, renamed, holds exactly the tensors of tiny-sd/ under diffusers and transformers names', (t) => {
  const ckpt = readSingleFile(SINGLE, configDir);
  t.is(ckpt.family, 'sd1');
  t.is(ckpt.textEncoderKind, 'clip');
  sameTensors(t, singleFileUnetWeights(ckpt), fixture('tiny-sd', 'unet', 'diffusion_pytorch_model.safetensors'));
  sameTensors(t, singleFileVaeWeights(ckpt), fixture('tiny-sd', 'vae', 'diffusion_pytorch_model.safetensors'));
  // The single file's text encoder has the `text_model.` level and the position_ids buffer (the loader skips both).
  const text = singleFileTextWeights(ckpt);
  const ref = SafetensorsWeights.open([fixture('tiny-sd', 'text_encoder', 'model.safetensors')]);
  t.deepEqual(
    text
      .keys()
      .filter((k) => !k.endsWith('position_ids'))
      .sort(),
    ref
      .keys()
      .map((k) => `text_model.${k}`)
      .sort(),
  );
  text.close();
  ref.close();
});

for (const run of runs) {
  test(`${run.name}: the single file gives the pipeline golden's images`, async (t) => {
    const err = await goldenRunError(t, engine, run);
    t.true(err < PIPELINE_TOL, `max abs error ${err}`);
  });
}

/**
 * tiny-sd's text encoder in OpenCLIP's layout (SD 2.x), with one extra resblock that the penultimate-layer view must
 * drop.
 */
function openClipSingleFile(): string {
  const te = readSafetensors(fixture('tiny-sd', 'text_encoder', 'model.safetensors')) as Map<string, F32Tensor>;
  const out = new Map<string, Tensor>();
  for (const [k, v] of readSafetensors(SINGLE)) if (!k.startsWith('cond_stage_model.')) out.set(k, v);
  const p = 'cond_stage_model.model.';
  out.set(`${p}token_embedding.weight`, te.get('embeddings.token_embedding.weight')!);
  out.set(`${p}positional_embedding`, te.get('embeddings.position_embedding.weight')!);
  out.set(`${p}ln_final.weight`, te.get('final_layer_norm.weight')!);
  out.set(`${p}ln_final.bias`, te.get('final_layer_norm.bias')!);
  out.set(`${p}text_projection`, { dtype: 'F32', shape: [32, 24], data: new Float32Array(32 * 24).fill(0.5) });
  const cat = (...ts: F32Tensor[]): F32Tensor => {
    const data = new Float32Array(ts.reduce((n, x) => n + x.data.length, 0));
    let off = 0;
    for (const x of ts) {
      data.set(x.data, off);
      off += x.data.length;
    }
    return { dtype: 'F32', shape: [ts.reduce((n, x) => n + x.shape[0], 0), ...ts[0].shape.slice(1)], data };
  };
  for (const n of [0, 1, 2]) {
    // Layer 2 does not exist in tiny-sd: a copy of layer 1 plays SD 2.x's last layer, which is never used.
    const src = (name: string) => te.get(`encoder.layers.${Math.min(n, 1)}.${name}`)!;
    const r = `${p}transformer.resblocks.${n}.`;
    out.set(`${r}ln_1.weight`, src('layer_norm1.weight'));
    out.set(`${r}ln_1.bias`, src('layer_norm1.bias'));
    out.set(`${r}ln_2.weight`, src('layer_norm2.weight'));
    out.set(`${r}ln_2.bias`, src('layer_norm2.bias'));
    out.set(
      `${r}attn.in_proj_weight`,
      cat(src('self_attn.q_proj.weight'), src('self_attn.k_proj.weight'), src('self_attn.v_proj.weight')),
    );
    out.set(
      `${r}attn.in_proj_bias`,
      cat(src('self_attn.q_proj.bias'), src('self_attn.k_proj.bias'), src('self_attn.v_proj.bias')),
    );
    out.set(`${r}attn.out_proj.weight`, src('self_attn.out_proj.weight'));
    out.set(`${r}attn.out_proj.bias`, src('self_attn.out_proj.bias'));
    out.set(`${r}mlp.c_fc.weight`, src('mlp.fc1.weight'));
    out.set(`${r}mlp.c_fc.bias`, src('mlp.fc1.bias'));
    out.set(`${r}mlp.c_proj.weight`, src('mlp.fc2.weight'));
    out.set(`${r}mlp.c_proj.bias`, src('mlp.fc2.bias'));
  }
  const file = join(mkdtempSync(join(tmpdir(), 'openclip-')), 'sd2-like.safetensors');
  writeSafetensors(file, Object.fromEntries(out));
  return file;
}

// Fused qkv split, names mapped, the last resblock dropped.
test('an OpenCLIP (SD 2.x) text encoder gives the same conditioning as tiny-sd/text_encoder', async (t) => {
  const file = openClipSingleFile();
  const ckpt = readSingleFile(file, configDir);
  t.is(ckpt.family, 'sd2');
  t.is(ckpt.textEncoderKind, 'openclip');
  const viaOpenClip = await PromptEncoder.load(file, {}, configDir);
  const reference = await PromptEncoder.load(fixture('tiny-sd', 'text_encoder'));
  const tokenizer = Tokenizer.load(fixture('tiny-sd', 'tokenizer'));
  try {
    const prompts = ['a photograph of an astronaut riding a horse', ''];
    for (const clipSkip of [0, 2]) {
      const a = (await viaOpenClip.encode(tokenizer, prompts, clipSkip)).embeds;
      const b = (await reference.encode(tokenizer, prompts, clipSkip)).embeds;
      const err = maxAbsError(a, b);
      t.log(`clip skip ${clipSkip}: max abs difference ${err.toExponential(2)}`);
      t.true(err < 1e-5, `clip skip ${clipSkip}: ${err}`);
    }
  } finally {
    await viaOpenClip.close();
    await reference.close();
  }
});

/**
 * A file with only the tensors config detection reads (shapes as in SD 1.5 / SD 2.1, tiny where detection does not
 * look).
 */
function detectionFile(family: 'sd1' | 'sd2', inChannels = 4): string {
  const z = (...shape: number[]): Tensor => ({
    dtype: 'F16',
    shape,
    data: new Uint16Array(shape.reduce((a, b) => a * b, 1)),
  });
  const u = 'model.diffusion_model.';
  const tensors: Record<string, Tensor> = {
    [`${u}input_blocks.0.0.weight`]: z(320, inChannels, 3, 3),
    [`${u}out.2.weight`]: z(4, 320, 3, 3),
    [`${u}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight`]: z(320, family === 'sd2' ? 1024 : 768),
    [`${u}input_blocks.1.1.proj_in.weight`]: family === 'sd2' ? z(320, 320) : z(320, 320, 1, 1),
    'first_stage_model.decoder.conv_in.weight': z(1),
  };
  if (family === 'sd2') {
    const p = 'cond_stage_model.model.';
    tensors[`${p}token_embedding.weight`] = z(8, 1024);
    tensors[`${p}positional_embedding`] = z(77, 1);
    tensors[`${p}transformer.resblocks.0.mlp.c_fc.weight`] = z(4096, 1);
    tensors[`${p}transformer.resblocks.23.ln_1.weight`] = z(1);
  } else {
    tensors['cond_stage_model.transformer.text_model.encoder.layers.11.layer_norm1.weight'] = z(1);
  }
  const file = join(mkdtempSync(join(tmpdir(), 'detect-')), `${family}.safetensors`);
  writeSafetensors(file, tensors);
  return file;
}

test('SD 1.x defaults are chosen from a CLIP text encoder and 768-wide cross-attention', (t) => {
  const file = detectionFile('sd1');
  const ckpt = readSingleFile(file);
  t.is(ckpt.family, 'sd1');
  t.is(ckpt.unetConfig.int('cross_attention_dim'), 768);
  t.false(ckpt.unetConfig.bool('use_linear_projection'));
  t.is(ckpt.textConfig.int('num_hidden_layers'), 12);
  t.is(ckpt.textConfig.str('hidden_act'), 'quick_gelu');
  t.is(ckpt.scheduler.str('prediction_type'), 'epsilon');
  t.is(Tokenizer.load(ckpt.tokenizer.dir, ckpt.tokenizer.configFile).padId, 49407);
  const source = openPipelineSource(file);
  t.is(source.nativeSize, 512);
  t.is(source.crossAttentionDim, 768);
  // An inpainting UNet (9 input channels) is read from conv_in's shape.
  t.is(readSingleFile(detectionFile('sd1', 9)).unetConfig.int('in_channels'), 9);
});

// OpenCLIP ViT-H: gelu, 16 heads, penultimate layer.
test('SD 2.x defaults: OpenCLIP ViT-H, linear projections, per-block heads, v-prediction, pad "!", 768 px', (t) => {
  const file = detectionFile('sd2');
  const ckpt = readSingleFile(file);
  t.is(ckpt.family, 'sd2');
  t.is(ckpt.unetConfig.int('cross_attention_dim'), 1024);
  t.true(ckpt.unetConfig.bool('use_linear_projection'));
  t.true(ckpt.unetConfig.bool('upcast_attention'));
  t.deepEqual(ckpt.unetConfig.ints('attention_head_dim'), [5, 10, 20, 20]);
  t.is(ckpt.textConfig.str('hidden_act'), 'gelu');
  t.is(ckpt.textConfig.int('hidden_size'), 1024);
  t.is(ckpt.textConfig.int('num_attention_heads'), 16);
  t.is(ckpt.textConfig.int('intermediate_size'), 4096);
  t.is(ckpt.textConfig.int('num_hidden_layers'), 23, '24 resblocks, conditioned on the penultimate');
  t.is(ckpt.scheduler.str('prediction_type'), 'v_prediction');
  t.is(Tokenizer.load(ckpt.tokenizer.dir, ckpt.tokenizer.configFile).padId, 0);
  t.is(openPipelineSource(file).nativeSize, 768);
  t.is(manifestForModel(file).pipelines[0].defaults.width, 768);
});

/**
 * stabilityai/stable-diffusion-2-1 as diffusers and transformers load it (`sum(p.numel() for p in m.parameters())`),
 * and its original config (v2-inference-v.yaml: num_head_channels 64, context_dim 1024; OpenCLIP ViT-H-14's text
 * tower: width 1024, 16 heads, 24 layers (the last unused), vocabulary 49408): figures from outside this project.
 */
const SD21 = {
  unetParameters: 865_910_724,
  textEncoderParameters: 340_387_840,
  headDim: 64,
  contextDim: 1024,
  textHeads: 16,
  vocabSize: 49408,
};

/** The weight shapes a module tree asks for, each weight made up as a view of one zero buffer. */
function askedShapes(define: (root: Scope) => void, options: ScopeOptions = {}) {
  const shapes = new Map<string, number[]>();
  // Pages of a zeroed buffer that nothing writes are never committed: 200 MB of address space, no memory.
  const zeros = new Float32Array(51 << 20);
  const g = new GraphBuilder();
  define(Scope.root(g, new MemoryWeights(new Map()), '', {
    ...options,
    fabricate: (key, shape) => {
      shapes.set(key, shape);
      return f32(zeros.subarray(0, numel(shape)), shape);
    },
  }));
  return { shapes, g };
}

const parameters = (shapes: Map<string, number[]>) => [...shapes.values()].reduce((n, s) => n + numel(s), 0);

test('the SD 2.x configs build SD 2.1: its parameter counts, head dim 64 everywhere, 1024-wide context', (t) => {
  const ckpt = readSingleFile(detectionFile('sd2'));
  const unetConfig = parseUnetConfig(ckpt.unetConfig);
  const unet = askedShapes((root) => defineUnetGraph(root, unetConfig), { attentionKernel: 'fused' });
  t.is(parameters(unet.shapes), SD21.unetParameters);
  const attentions = unet.g.nodes.filter((n) => n.op === 'MultiHeadAttention');
  t.is(attentions.length, 2 * 16, 'self- and cross-attention of 16 transformer blocks');
  for (const n of attentions) t.is(n.attrs.scale, 1 / Math.sqrt(SD21.headDim), n.name);
  const toK = unet.shapes.get('down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight');
  t.deepEqual(toK, [320, SD21.contextDim]);
  // The vocabulary is read from the checkpoint's token_embedding, which the detection file keeps 8 rows long.
  const textConfig = { ...readClipTextConfig(ckpt.textConfig), vocabSize: SD21.vocabSize };
  t.is(textConfig.heads, SD21.textHeads);
  const text = askedShapes((root) => new ClipTextTransformer(root.child('text_model'), textConfig));
  t.is(parameters(text.shapes), SD21.textEncoderParameters);
});

test('a checkpoint that is neither SD 1.x nor 2.x sized asks for its config folder', (t) => {
  t.throws(() => readSingleFile(SINGLE), {
    message: /attends to width 768, but this UNet's is 32; give the folder of its configs/,
  });
});

test('pickle checkpoints are refused unread, with how to convert them', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pickle-'));
  for (const ext of ['ckpt', 'bin', 'pt']) {
    const file = join(dir, `model.${ext}`);
    writeFileSync(file, 'not even a pickle');
    t.throws(() => readSingleFile(file), {
      message: /Python pickles, which are never loaded here.*Convert it to safetensors/,
    });
    t.throws(() => manifestForModel(file), { message: /pickle/ });
  }
});

test('an SDXL single file is named as such', (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'sdxl-')), 'xl.safetensors');
  writeSafetensors(file, {
    'conditioner.embedders.0.transformer.text_model.final_layer_norm.weight': {
      dtype: 'F32',
      shape: [1],
      data: new Float32Array(1),
    },
  });
  t.throws(() => readSingleFile(file), { message: /an SDXL checkpoint/ });
});
