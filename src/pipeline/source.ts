import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Config } from '../core/config.js';
import { contentKey, readDiffusersFolder, type ModelComponent } from '../models/diffusers-folder.js';
import { cachedGraph } from '../onnx/graph-cache.js';
import {
  readSingleFile,
  singleFileUnetWeights,
  singleFileVaeWeights,
  type SingleFileCheckpoint,
} from '../models/single-file.js';
import { buildUnetGraph, loadUnetGraph } from '../models/unet.js';
import { buildVaeDecoderGraph, loadVae, readVaeConfig } from '../models/vae.js';
import { readOnnxSignature } from '../onnx/signature.js';
import { convertToFloat16 } from '../onnx/fp16.js';
import type { GraphBuilder } from '../onnx/graph.js';
import { InputError } from '../core/errors.js';

/**
 * Where a pipeline's parts come from, whatever the checkpoint's form: a diffusers folder, a single-file SD 1.x / 2.x
 * checkpoint (with an optional config folder), or an ONNX export folder (optimum's or diffusers' script's layout,
 * served as exported). Opening one reads configs and headers only; the graphs are built (or found) on demand.
 */

export type PipelineFormat = 'diffusers' | 'single-file' | 'onnx';

export interface PipelineSource {
  format: PipelineFormat;
  path: string;
  /** Tokenizer folder, and the tokenizer_config.json that sets its pad token and length. */
  tokenizer: { dir: string; configFile: string };
  scheduler: Config;
  crossAttentionDim: number;
  latentChannels: number;
  /** Pixels per latent cell. */
  vaeScale: number;
  /** The size the model was trained at, in pixels. */
  nativeSize: number;
  /** UNet-space latents are multiplied by this before the VAE decoder: 1 for our graphs, which unscale themselves. */
  decoderInputScale: number;
  /**
   * The ONNX UNet: inputs sample, timestep, encoder_hidden_states (named so or in that order); first output the
   * prediction.
   */
  /** The ONNX UNet; `float16`: a float16 graph (for GPU providers) where the graph is built here. */
  unetModel(float16: boolean): string;
  /** The ONNX VAE decoder: one latent input, first output the image in [-1, 1]. */
  vaeDecoderModel(): string;
  /** The text encoder that comes with the pipeline, as an encoder path (+ config folder) PromptEncoder loads. */
  ownEncoder: { path: string; config?: string };
}

/** The cached UNet graph, converted to float16 (fp32 kept where SD needs it) for GPU providers when asked. */
function unetGraph(key: string, build: () => GraphBuilder, float16: boolean): string {
  return float16 ? cachedGraph('unet-fp16', key, () => convertToFloat16(build())) : cachedGraph('unet', key, build);
}

/**
 * An ONNX export: `unet/model.onnx` and `vae_decoder/model.onnx` beside `text_encoder/`, `tokenizer/`, `scheduler/`.
 */
export function isOnnxExport(dir: string): boolean {
  return existsSync(join(dir, 'unet', 'model.onnx')) && existsSync(join(dir, 'vae_decoder', 'model.onnx'));
}

function fromDiffusers(root: string): PipelineSource {
  const folder = readDiffusersFolder(root);
  const { unet, vae, tokenizer, scheduler, text_encoder } = folder.components;
  const vaeScale = 2 ** (readVaeConfig(vae.config).blockOutChannels.length - 1);
  return {
    format: 'diffusers',
    path: folder.root,
    tokenizer: { dir: tokenizer.dir, configFile: join(tokenizer.dir, 'tokenizer_config.json') },
    scheduler: scheduler.config,
    crossAttentionDim: unet.config.int('cross_attention_dim'),
    latentChannels: unet.config.int('in_channels', 4),
    vaeScale,
    nativeSize: unet.config.int('sample_size', 64) * vaeScale,
    decoderInputScale: 1,
    unetModel: (float16) => unetGraph(contentKey(unet), () => loadUnetGraph(unet.dir), float16),
    vaeDecoderModel: () =>
      cachedGraph('vae-decoder', contentKey(vae), () => {
        const { config, weights } = loadVae(vae.dir);
        try {
          return buildVaeDecoderGraph(config, weights);
        } finally {
          weights.close();
        }
      }),
    ownEncoder: { path: text_encoder.dir },
  };
}

function fromSingleFile(file: string, configDir?: string): PipelineSource {
  const ckpt: SingleFileCheckpoint = readSingleFile(file, configDir);
  const component = (className: string, config: Config): ModelComponent => ({
    dir: ckpt.file,
    className: `single-file ${className}`,
    config,
    weightFiles: [ckpt.file],
  });
  const vaeScale = 2 ** (readVaeConfig(ckpt.vaeConfig).blockOutChannels.length - 1);
  return {
    format: 'single-file',
    path: ckpt.file,
    tokenizer: ckpt.tokenizer,
    scheduler: ckpt.scheduler,
    crossAttentionDim: ckpt.unetConfig.int('cross_attention_dim'),
    latentChannels: ckpt.unetConfig.int('in_channels', 4),
    vaeScale,
    nativeSize: ckpt.unetConfig.int('sample_size', 64) * vaeScale,
    decoderInputScale: 1,
    unetModel: (float16) =>
      unetGraph(
        contentKey(component('UNet2DConditionModel', ckpt.unetConfig)),
        () => {
          const w = singleFileUnetWeights(ckpt);
          try {
            return buildUnetGraph(ckpt.unetConfig, w);
          } finally {
            w.close();
          }
        },
        float16,
      ),
    vaeDecoderModel: () =>
      cachedGraph('vae-decoder', contentKey(component('AutoencoderKL', ckpt.vaeConfig)), () => {
        const w = singleFileVaeWeights(ckpt);
        try {
          return buildVaeDecoderGraph(readVaeConfig(ckpt.vaeConfig), w);
        } finally {
          w.close();
        }
      }),
    ownEncoder: { path: ckpt.file, config: configDir },
  };
}

function fixedDim(file: string, value: string, dims: Array<number | string>, axis: number): number {
  const d = dims.at(axis);
  if (typeof d !== 'number')
    throw new InputError(`${file}: input '${value}' has no fixed size on axis ${axis} (dims [${dims}])`);
  return d;
}

function fromOnnx(root: string): PipelineSource {
  const unetFile = join(root, 'unet', 'model.onnx');
  const unet = readOnnxSignature(unetFile);
  const input = (names: string[], index: number) =>
    unet.inputs.find((i) => names.includes(i.name)) ?? unet.inputs[index];
  const sample = input(['sample'], 0);
  const states = input(['encoder_hidden_states'], 2);
  if (!sample || !states)
    throw new InputError(
      `${unetFile}: expected inputs sample, timestep, encoder_hidden_states; it has ` +
        `${unet.inputs.map((i) => i.name).join(', ')}`,
    );
  const optional = (sub: string, file: string) =>
    existsSync(join(root, sub, file)) ? Config.read(join(root, sub, file)) : undefined;
  const unetConfig = optional('unet', 'config.json');
  const vaeConfig = optional('vae_decoder', 'config.json');
  const scheduler = optional('scheduler', 'scheduler_config.json');
  if (!scheduler) throw new InputError(`${root}: no scheduler/scheduler_config.json in the ONNX export`);
  // optimum copies each component's config beside its model; diffusers' script writes none (SD defaults apply).
  const vaeScale = vaeConfig ? 2 ** (vaeConfig.ints('block_out_channels').length - 1) : 8;
  const tokenizerDir = join(root, 'tokenizer');
  return {
    format: 'onnx',
    path: root,
    tokenizer: { dir: tokenizerDir, configFile: join(tokenizerDir, 'tokenizer_config.json') },
    scheduler,
    crossAttentionDim: fixedDim(unetFile, states.name, states.dims, -1),
    latentChannels: fixedDim(unetFile, sample.name, sample.dims, 1),
    vaeScale,
    nativeSize: (unetConfig?.int('sample_size', 64) ?? 64) * vaeScale,
    decoderInputScale: 1 / (vaeConfig?.num('scaling_factor', 0.18215) ?? 0.18215),
    unetModel: () => unetFile,
    vaeDecoderModel: () => join(root, 'vae_decoder', 'model.onnx'),
    ownEncoder: { path: join(root, 'text_encoder') },
  };
}

/**
 * Open a pipeline: a `.safetensors` single file (with an optional config folder), an ONNX export or a diffusers folder.
 */
export function openPipelineSource(path: string, configDir?: string): PipelineSource {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new InputError(`${abs}: no such file or folder`);
  if (statSync(abs).isFile()) return fromSingleFile(abs, configDir);
  if (configDir) throw new InputError(`${abs}: a config folder is only for single-file checkpoints`);
  return isOnnxExport(abs) ? fromOnnx(abs) : fromDiffusers(abs);
}

/** Width and depth of a text encoder (a CLIP folder, a single file's, or an export), from configs and headers only. */
export function describeEncoder(path: string, configDir?: string): { hiddenSize: number; layers: number } {
  if (statSync(path).isFile()) {
    const text = readSingleFile(path, configDir).textConfig;
    return { hiddenSize: text.int('hidden_size'), layers: text.int('num_hidden_layers') };
  }
  const onnx = join(path, 'model.onnx');
  if (existsSync(onnx)) {
    const out = readOnnxSignature(onnx).outputs[0];
    const width = out?.dims.at(-1);
    if (typeof width !== 'number') throw new InputError(`${onnx}: its first output has no fixed hidden size`);
    return { hiddenSize: width, layers: 1 };
  }
  const c = Config.read(join(path, 'config.json'));
  const text = c.has('text_config') ? c.section('text_config') : c;
  return { hiddenSize: text.int('hidden_size'), layers: text.int('num_hidden_layers') };
}
