import { copyFileSync, existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoadedClip } from '../models/clip-loader.js';
import { Config } from '../core/config.js';
import { writeSafetensors } from '../core/safetensors.js';
import type { F32Tensor } from '../core/tensor.js';
import { loraKey, mergeLora, type LoraOptions } from './lora.js';

/**
 * Writing a fine-tuned model back out in transformers' layouts: the text tower alone as a CLIPTextModel (what the
 * server serves as a text encoder) and the whole CLIPModel (for retrieval). Float32 weights.
 */

const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'vocab.json',
  'merges.txt',
  'special_tokens_map.json',
];

/** The starting checkpoint with trained values in place: full weights as they are, LoRA merged into its weights. */
export function trainedWeights(
  clip: LoadedClip,
  params: Map<string, F32Tensor>,
  lora?: { options: LoraOptions; modules: string[] },
): Map<string, F32Tensor> {
  const out = new Map<string, F32Tensor>();
  for (const key of clip.weights.keys()) {
    if (/(^|\.)position_ids$/.test(key)) continue;
    out.set(key, params.get(key) ?? clip.weights.get(key));
  }
  for (const module of lora?.modules ?? []) {
    const key = `${module}.weight`;
    const A = params.get(loraKey(module, 'A'));
    const B = params.get(loraKey(module, 'B'));
    if (!A || !B) throw new Error(`LoRA parameters of ${module} are missing`);
    out.set(key, mergeLora(clip.weights.get(key), A, B, lora!.options));
  }
  return out;
}

/** config.json written beside the weights, renamed into place so a reader never sees half a file. */
function writeConfig(dir: string, config: Record<string, unknown>): void {
  const file = join(dir, 'config.json');
  writeFileSync(`${file}.tmp-${process.pid}`, `${JSON.stringify(config, null, 2)}\n`);
  renameSync(`${file}.tmp-${process.pid}`, file);
}

function copyTokenizer(from: string, to: string): void {
  for (const f of TOKENIZER_FILES) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
}

/**
 * The text encoder folder (files written into `dir`, which may hold other things): config.json (the text_config),
 * model.safetensors with `text_model.` keys, tokenizer files. When the source has a text projection (a CLIPModel),
 * the folder is a CLIPTextModelWithProjection holding the fine-tuned `text_projection` too: Stable Diffusion reads
 * only the tower, retrieval in the joint space needs the projection that was trained with it.
 */
export function exportTextModel(clip: LoadedClip, weights: Map<string, F32Tensor>, dir: string): void {
  const source = Config.read(join(clip.dir, 'config.json'));
  const textConfig = clip.kind === 'CLIPModel' ? source.section('text_config').raw : source.raw;
  const projection = clip.kind === 'CLIPModel' ? weights.get('text_projection.weight') : undefined;
  const architecture = projection ? 'CLIPTextModelWithProjection' : 'CLIPTextModel';
  const config = {
    ...textConfig,
    architectures: [architecture],
    model_type: 'clip_text_model',
    dtype: 'float32',
    ...(projection ? { projection_dim: projection.shape[0] } : {}),
  };
  const tensors = new Map<string, F32Tensor>();
  for (const [k, v] of weights) {
    if (k.startsWith('text_model.')) tensors.set(k, v);
    else if (clip.kind !== 'CLIPModel' && !k.startsWith('text_projection.')) tensors.set(`text_model.${k}`, v);
  }
  if (projection) tensors.set('text_projection.weight', projection);
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeConfig(dir, config);
  copyTokenizer(clip.dir, dir);
}

/** The whole CLIPModel (both towers, projections, logit_scale), config as the source's. */
export function exportClipModel(clip: LoadedClip, weights: Map<string, F32Tensor>, dir: string): void {
  const source = Config.read(join(clip.dir, 'config.json'));
  const config = { ...source.raw, dtype: 'float32' };
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), weights, { format: 'pt' });
  writeConfig(dir, config);
  copyTokenizer(clip.dir, dir);
}
