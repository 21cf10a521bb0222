import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { readOnnxSignature, type OnnxValueInfo } from '../onnx/signature.js';
import { Config } from '../core/config.js';
import { readDiffusersFolder } from './diffusers-folder.js';
import { SafetensorsFile } from '../core/safetensors.js';
import {
  CLIP_TEXT_PREFIX,
  OPENCLIP_TEXT_PREFIX,
  readSingleFile,
  refusePickle,
  UNET_PREFIX,
  VAE_PREFIX,
} from './single-file.js';
import { numel } from '../core/tensor.js';
import { weightFiles } from '../core/weights.js';
import { InputError } from '../core/errors.js';

/**
 * What a checkpoint on disk is, from its headers and configs alone (no tensor data is read): diffusers pipeline,
 * single-file SD, CLIP model, ONNX export, or a bare safetensors / ONNX file; its parts with dtypes, parameter
 * counts and sizes; and whether its text encoder fits its UNet.
 */

export interface PartInfo {
  name: string;
  files: string[];
  bytes: number;
  /** Tensor counts per dtype (safetensors), or declared input/output types (ONNX). */
  dtypes: Record<string, number>;
  /** Weights in the safetensors files (ONNX parts: not counted). */
  parameters?: number;
  details: Record<string, unknown>;
}

export interface Fit {
  encoderHiddenSize: number;
  crossAttentionDim: number;
  fits: boolean;
}

export interface Inspection {
  path: string;
  kind: string;
  parts: PartInfo[];
  fit?: Fit;
  notes: string[];
}

/** dtype counts, parameter count and byte size of the tensors of one safetensors file (optionally under a prefix). */
function safetensorsPart(name: string, file: string, prefix = ''): PartInfo {
  const f = SafetensorsFile.open(file);
  try {
    const dtypes: Record<string, number> = {};
    let parameters = 0;
    let bytes = 0;
    for (const [key, e] of f.entries) {
      if (!key.startsWith(prefix)) continue;
      dtypes[e.dtype] = (dtypes[e.dtype] ?? 0) + 1;
      parameters += numel(e.shape);
      bytes += e.end - e.begin;
    }
    return { name, files: [file], bytes: prefix ? bytes : statSync(file).size, dtypes, parameters, details: {} };
  } finally {
    f.close();
  }
}

function mergeParts(name: string, parts: PartInfo[], details: Record<string, unknown>): PartInfo {
  const dtypes: Record<string, number> = {};
  for (const p of parts) for (const [d, n] of Object.entries(p.dtypes)) dtypes[d] = (dtypes[d] ?? 0) + n;
  return {
    name,
    files: parts.flatMap((p) => p.files),
    bytes: parts.reduce((s, p) => s + p.bytes, 0),
    dtypes,
    parameters: parts.reduce((s, p) => s + (p.parameters ?? 0), 0),
    details,
  };
}

function weightsPart(name: string, files: string[], details: Record<string, unknown>): PartInfo {
  return mergeParts(
    name,
    files.map((f) => safetensorsPart(name, f)),
    details,
  );
}

function textWidth(config: Config): { hidden: number; layers: number } {
  const text = config.has('text_config') ? config.section('text_config') : config;
  return { hidden: text.int('hidden_size'), layers: text.int('num_hidden_layers') };
}

function fit(encoderHiddenSize: number, crossAttentionDim: number): Fit {
  return { encoderHiddenSize, crossAttentionDim, fits: encoderHiddenSize === crossAttentionDim };
}

function diffusersPipeline(dir: string): Inspection {
  const { components: c, root } = readDiffusersFolder(dir);
  const cross = c.unet.config.int('cross_attention_dim');
  const text = textWidth(c.text_encoder.config);
  return {
    path: root,
    kind: 'diffusers pipeline',
    parts: [
      weightsPart('unet', c.unet.weightFiles, {
        class: c.unet.className,
        cross_attention_dim: cross,
        sample_size: c.unet.config.int('sample_size', 64),
      }),
      weightsPart('vae', c.vae.weightFiles, { class: c.vae.className }),
      weightsPart('text_encoder', c.text_encoder.weightFiles, {
        class: c.text_encoder.className,
        hidden_size: text.hidden,
        layers: text.layers,
      }),
    ],
    fit: fit(text.hidden, cross),
    notes: [
      `scheduler: ${c.scheduler.className} (prediction_type ${c.scheduler.config.str('prediction_type', 'epsilon')})`,
      `tokenizer: ${c.tokenizer.files.map((f) => basename(f)).join(', ')}`,
    ],
  };
}

function clipFolder(dir: string): Inspection {
  const config = Config.read(join(dir, 'config.json'));
  const kind = config.has('architectures') ? config.strs('architectures')[0] : config.str('model_type');
  const details: Record<string, unknown> = {};
  if (config.has('text_config') || config.has('hidden_size')) {
    const t = textWidth(config);
    Object.assign(details, { text_hidden_size: t.hidden, text_layers: t.layers });
  }
  if (config.has('projection_dim')) details.projection_dim = config.int('projection_dim');
  return { path: dir, kind, parts: [weightsPart(kind, weightFiles(dir, 'model'), details)], notes: [] };
}

function onnxPart(name: string, dir: string, model = join(dir, 'model.onnx')): PartInfo {
  const sig = readOnnxSignature(model);
  // External data (weights over the protobuf limit) lies beside the model.
  const files = readdirSync(dir)
    .filter((f) => f !== 'config.json')
    .map((f) => join(dir, f));
  const dtypes: Record<string, number> = {};
  for (const v of [...sig.inputs, ...sig.outputs]) dtypes[v.type] = (dtypes[v.type] ?? 0) + 1;
  const show = (vs: OnnxValueInfo[]) => vs.map((v) => `${v.name}: ${v.type}[${v.dims.map((d) => d || '?').join(',')}]`);
  return {
    name,
    files,
    bytes: files.reduce((s, f) => s + statSync(f).size, 0),
    dtypes,
    details: { inputs: show(sig.inputs), outputs: show(sig.outputs) },
  };
}

function onnxExport(dir: string): Inspection {
  const parts = ['text_encoder', 'unet', 'vae_decoder', 'vae_encoder']
    .filter((p) => existsSync(join(dir, p, 'model.onnx')))
    .map((p) => onnxPart(p, join(dir, p)));
  const unet = readOnnxSignature(join(dir, 'unet', 'model.onnx'));
  const states = unet.inputs.find((i) => i.name === 'encoder_hidden_states') ?? unet.inputs[2];
  const textFile = join(dir, 'text_encoder', 'model.onnx');
  const hidden = existsSync(textFile) ? readOnnxSignature(textFile).outputs[0]?.dims.at(-1) : undefined;
  const cross = states?.dims.at(-1);
  return {
    path: dir,
    kind: 'ONNX export',
    parts,
    fit: typeof hidden === 'number' && typeof cross === 'number' ? fit(hidden, cross) : undefined,
    notes: [],
  };
}

function singleFile(file: string): Inspection {
  const f = SafetensorsFile.open(file);
  const names = f.names;
  if (names.length === 0) {
    f.close();
    throw new InputError(`${file}: holds no tensors, so it is no checkpoint`);
  }
  const shape = (suffix: string, prefix: string) => {
    const key = names.find((k) => k.startsWith(prefix) && k.endsWith(suffix));
    return key ? f.entry(key).shape : undefined;
  };
  // Widths from the tensors themselves: the UNet's context projection and the text encoder's token embedding.
  const cross = shape('.attn2.to_k.weight', UNET_PREFIX)?.[1];
  const hidden = shape('token_embedding.weight', 'cond_stage_model.')?.[1];
  f.close();
  const isSd = names.some((k) => k.startsWith(UNET_PREFIX));
  if (!isSd) {
    const whole = safetensorsPart('tensors', file);
    whole.details = { tensors: names.length };
    return { path: file, kind: 'safetensors file', parts: [whole], notes: [] };
  }
  const textPrefix = names.some((k) => k.startsWith(OPENCLIP_TEXT_PREFIX)) ? OPENCLIP_TEXT_PREFIX : CLIP_TEXT_PREFIX;
  const parts = [
    safetensorsPart('unet', file, UNET_PREFIX),
    safetensorsPart('vae', file, VAE_PREFIX),
    {
      ...safetensorsPart('text_encoder', file, textPrefix),
      details: { layout: textPrefix === OPENCLIP_TEXT_PREFIX ? 'OpenCLIP' : 'transformers CLIP' },
    },
  ];
  try {
    const ckpt = readSingleFile(file);
    parts[0].details = {
      cross_attention_dim: ckpt.unetConfig.int('cross_attention_dim'),
      in_channels: ckpt.unetConfig.int('in_channels'),
    };
    return {
      path: file,
      kind: `single-file SD ${ckpt.family === 'sd2' ? '2.x' : '1.x'}`,
      parts,
      fit: fit(ckpt.textConfig.int('hidden_size'), ckpt.unetConfig.int('cross_attention_dim')),
      notes: [
        `defaults: prediction_type ${ckpt.scheduler.str('prediction_type')}, ` +
          `${ckpt.unetConfig.int('sample_size') * 8} px`,
      ],
    };
  } catch (e) {
    const shapesFit = cross !== undefined && hidden !== undefined ? fit(hidden, cross) : undefined;
    return {
      path: file,
      kind: 'single-file SD (not SD 1.x / 2.x sized)',
      parts,
      fit: shapesFit,
      notes: [(e as Error).message],
    };
  }
}

export function inspectPath(path: string): Inspection {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new InputError(`${abs}: no such file or folder`);
  if (statSync(abs).isFile()) {
    refusePickle(abs);
    const ext = extname(abs).toLowerCase();
    if (ext === '.safetensors') return singleFile(abs);
    if (ext === '.onnx') {
      const part = onnxPart(basename(abs), dirname(abs), abs);
      part.files = [abs];
      part.bytes = statSync(abs).size;
      return { path: abs, kind: 'ONNX model', parts: [part], notes: [] };
    }
    throw new InputError(`${abs}: not a .safetensors or .onnx file`);
  }
  if (existsSync(join(abs, 'unet', 'model.onnx'))) return onnxExport(abs);
  if (existsSync(join(abs, 'model_index.json'))) return diffusersPipeline(abs);
  if (existsSync(join(abs, 'model.onnx')))
    return { path: abs, kind: 'ONNX model folder', parts: [onnxPart(basename(abs), abs)], notes: [] };
  if (existsSync(join(abs, 'config.json'))) return clipFolder(abs);
  throw new InputError(`${abs}: not a model folder (no model_index.json, config.json, model.onnx or unet/model.onnx)`);
}

/** The hidden size of an inspected encoder (CLIP folder, or a pipeline's own), for `--pipeline` fit checks. */
export function encoderHiddenSize(i: Inspection): number | undefined {
  if (i.fit) return i.fit.encoderHiddenSize;
  const d = i.parts[0]?.details;
  return typeof d?.text_hidden_size === 'number' ? d.text_hidden_size : undefined;
}

/** The cross-attention width of an inspected pipeline. */
export function crossAttentionDim(i: Inspection): number | undefined {
  return i.fit?.crossAttentionDim;
}
