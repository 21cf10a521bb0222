import { join } from 'node:path';
import type * as ort from 'onnxruntime-node';
import { serializeModel } from '../onnx/serialize.js';
import { createSession, run, type SessionSettings } from '../onnx/session.js';
import {
  buildClipTextGraph,
  buildClipVisionGraph,
  readClipTextConfig,
  readClipVisionConfig,
  type ClipTextConfig,
  type ClipVisionConfig,
} from './clip.js';
import { Config } from '../core/config.js';
import { f32, type F32Tensor, type Tensor } from '../core/tensor.js';
import { SafetensorsWeights, weightFiles, type WeightStore } from '../core/weights.js';

export type ClipKind = 'CLIPModel' | 'CLIPTextModel' | 'CLIPTextModelWithProjection' | 'CLIPVisionModelWithProjection';
const KINDS: ClipKind[] = [
  'CLIPModel',
  'CLIPTextModel',
  'CLIPTextModelWithProjection',
  'CLIPVisionModelWithProjection',
];

/** A transformers CLIP folder, opened: what it holds and how wide its towers are. */
export interface LoadedClip {
  dir: string;
  kind: ClipKind;
  textConfig?: ClipTextConfig;
  visionConfig?: ClipVisionConfig;
  /** Width of text_embeds / image_embeds; absent when the checkpoint has no projection. */
  projectionDim?: number;
  weights: ClosableWeights;
}

/** Weights held open (a file) until the graph is built. */
export type ClosableWeights = WeightStore & { close(): void };

function kindOf(config: Config): ClipKind {
  const arch = config.has('architectures') ? config.strs('architectures')[0] : undefined;
  if (arch !== undefined) {
    if (!KINDS.includes(arch as ClipKind))
      throw new Error(`${config.file}: architecture '${arch}' is not one of ${KINDS.join(', ')}`);
    return arch as ClipKind;
  }
  const type = config.str('model_type');
  if (type === 'clip') return 'CLIPModel';
  if (type === 'clip_text_model') return 'CLIPTextModel';
  throw new Error(`${config.file}: model_type '${type}' is not a CLIP model (and no architectures are given)`);
}

/**
 * Open `dir` (config.json + model.safetensors): CLIPModel, CLIPTextModel(WithProjection) or
 * CLIPVisionModelWithProjection.
 */
export function loadClip(dir: string): LoadedClip {
  const config = Config.read(join(dir, 'config.json'));
  kindOf(config); // a config that is not CLIP is refused before its weights are opened
  return openClip(dir, config, SafetensorsWeights.open(weightFiles(dir, 'model')));
}

/**
 * A CLIP model from its config and weights wherever they are (a folder, or a single-file checkpoint's text encoder
 * seen under transformers names); `dir` names the source in errors. Closes `weights` if the config is refused.
 */
export function openClip(dir: string, config: Config, weights: ClosableWeights): LoadedClip {
  try {
    const kind = kindOf(config);
    switch (kind) {
      case 'CLIPModel':
        return {
          dir,
          kind,
          weights,
          textConfig: readClipTextConfig(config.section('text_config')),
          visionConfig: readClipVisionConfig(config.section('vision_config')),
          projectionDim: config.int('projection_dim'),
        };
      case 'CLIPTextModel':
        return { dir, kind, weights, textConfig: readClipTextConfig(config) };
      case 'CLIPTextModelWithProjection':
        return {
          dir,
          kind,
          weights,
          textConfig: readClipTextConfig(config),
          projectionDim: config.int('projection_dim'),
        };
      case 'CLIPVisionModelWithProjection':
        return {
          dir,
          kind,
          weights,
          visionConfig: readClipVisionConfig(config),
          projectionDim: config.int('projection_dim'),
        };
    }
  } catch (e) {
    weights.close();
    throw e;
  }
}

function requireText(clip: LoadedClip): ClipTextConfig {
  if (!clip.textConfig) throw new Error(`${clip.dir}: a ${clip.kind} has no text tower`);
  return clip.textConfig;
}

function requireVision(clip: LoadedClip): ClipVisionConfig {
  if (!clip.visionConfig) throw new Error(`${clip.dir}: a ${clip.kind} has no vision tower`);
  return clip.visionConfig;
}

export interface TextEncoding {
  lastHidden: F32Tensor;
  pooled: F32Tensor;
  /** hidden_states.0 .. hidden_states.L; the last is before final_layer_norm. */
  hiddenStates: F32Tensor[];
  /** What a diffusion UNet is conditioned on: the clip-skipped state through final_layer_norm. */
  conditioning: F32Tensor;
  textEmbeds?: F32Tensor;
}

/** The text tower as an ORT session, for the pipeline. */
export class ClipTextEncoder {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly config: ClipTextConfig,
    readonly projectionDim?: number,
  ) {}

  /** Hidden size: must match the UNet's cross_attention_dim. */
  get hiddenSize(): number {
    return this.config.hiddenSize;
  }

  static async create(clip: LoadedClip, settings: SessionSettings = {}): Promise<ClipTextEncoder> {
    const config = requireText(clip);
    const graph = buildClipTextGraph(clip.weights, config, { projectionDim: clip.projectionDim, clipSkip: true });
    return new ClipTextEncoder(await createSession(serializeModel(graph), settings), config, clip.projectionDim);
  }

  /**
   * ids: [batch, seqLen] row-major token ids. `clipSkip` picks `conditioning` (0 or 1: the last layer, 2: the
   * penultimate, ...; see ClipTextTransformer.forward).
   */
  async encode(ids: BigInt64Array, seqLen = this.config.maxPositions, clipSkip = 0): Promise<TextEncoding> {
    const out = await run(this.session, this.feeds(ids, seqLen, clipSkip));
    const hiddenStates = Array.from({ length: this.config.layers + 1 }, (_, i) => out[`hidden_states.${i}`]);
    const { last_hidden_state: lastHidden, pooler_output: pooled, conditioning, text_embeds: textEmbeds } = out;
    return { lastHidden, pooled, hiddenStates, conditioning, textEmbeds };
  }

  /** Only `conditioning`, what the UNet attends to: the session skips copying out every hidden state. */
  async conditioning(ids: BigInt64Array, seqLen = this.config.maxPositions, clipSkip = 0): Promise<F32Tensor> {
    const out = await run(this.session, this.feeds(ids, seqLen, clipSkip), ['conditioning']);
    return out.conditioning;
  }

  private feeds(ids: BigInt64Array, seqLen: number, clipSkip: number): Record<string, Tensor> {
    if (seqLen > this.config.maxPositions || ids.length % seqLen !== 0) {
      throw new Error(
        `text encoder: ${ids.length} ids are not rows of ${seqLen} tokens (at most ${this.config.maxPositions})`,
      );
    }
    if (!Number.isInteger(clipSkip) || clipSkip < 0 || clipSkip > this.config.layers) {
      throw new Error(`clip skip ${clipSkip} is outside 0..${this.config.layers}, the encoder's layers`);
    }
    return {
      input_ids: { dtype: 'I64', shape: [ids.length / seqLen, seqLen], data: ids },
      clip_skip: { dtype: 'I64', shape: [], data: BigInt64Array.of(BigInt(clipSkip)) },
    };
  }
}

export interface ImageEncoding {
  lastHidden: F32Tensor;
  pooled: F32Tensor;
  imageEmbeds?: F32Tensor;
}

export class ClipVisionEncoder {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly config: ClipVisionConfig,
  ) {}

  static async create(clip: LoadedClip, settings: SessionSettings = {}): Promise<ClipVisionEncoder> {
    const config = requireVision(clip);
    const graph = buildClipVisionGraph(clip.weights, config, { projectionDim: clip.projectionDim });
    return new ClipVisionEncoder(await createSession(serializeModel(graph), settings), config);
  }

  /** pixels: [batch, C, image_size, image_size], already preprocessed (see clip-preprocess.ts). */
  async encode(pixels: F32Tensor): Promise<ImageEncoding> {
    const out = await run(this.session, { pixel_values: pixels });
    return { lastHidden: out.last_hidden_state, pooled: out.pooler_output, imageEmbeds: out.image_embeds };
  }
}

/** CLIPModel's `logits_per_image`: exp(logit_scale) * cos(image_i, text_j), [images, texts]. */
export function clipLogits(imageEmbeds: F32Tensor, textEmbeds: F32Tensor, logitScale: number): F32Tensor {
  const [ni, d] = imageEmbeds.shape;
  const [nt, dt] = textEmbeds.shape;
  if (d !== dt) throw new Error(`clipLogits: image embeddings are ${d} wide but text embeddings ${dt}`);
  const unit = (t: F32Tensor, rows: number) => {
    const out = new Float64Array(rows * d);
    for (let r = 0; r < rows; r++) {
      let norm = 0;
      for (let k = 0; k < d; k++) norm += t.data[r * d + k] ** 2;
      norm = Math.sqrt(norm);
      for (let k = 0; k < d; k++) out[r * d + k] = t.data[r * d + k] / norm;
    }
    return out;
  };
  const a = unit(imageEmbeds, ni);
  const b = unit(textEmbeds, nt);
  const scale = Math.exp(logitScale);
  const logits = new Float32Array(ni * nt);
  for (let i = 0; i < ni; i++) {
    for (let j = 0; j < nt; j++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += a[i * d + k] * b[j * d + k];
      logits[i * nt + j] = scale * dot;
    }
  }
  return f32(logits, [ni, nt]);
}

/** CLIPModel's learned temperature, as stored (the logit of the scale). */
export function logitScale(weights: WeightStore): number {
  const t = weights.get('logit_scale');
  if (t.data.length !== 1) throw new Error(`${weights.source}: logit_scale has shape [${t.shape}], expected a scalar`);
  return t.data[0];
}
