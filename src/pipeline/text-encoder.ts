import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ClipTextEncoder, loadClip, openClip, type LoadedClip } from '../models/clip-loader.js';
import { textTowerPrefix } from '../models/clip.js';
import { readSingleFile, singleFileTextWeights } from '../models/single-file.js';
import { AdaptedSession } from '../onnx/adapted-session.js';
import type { SessionSettings } from '../onnx/session.js';
import type { F32Tensor } from '../core/tensor.js';
import type { Tokenizer } from './tokenizer.js';

/** What the pipeline needs of a text tower: ids in, the last hidden state (and, for clip skip, every layer's) out. */
interface TextTower {
  hiddenSize: number;
  /** Transformer layers; an exported encoder counts as one (it returns only its last hidden state). */
  layers: number;
  encode(ids: BigInt64Array, seqLen: number): Promise<{ lastHidden: F32Tensor; hiddenStates?: F32Tensor[] }>;
  release(): Promise<void>;
}

type FinalNorm = { weight: Float32Array; bias: Float32Array; eps: number };

/** A transformers CLIP text tower, built as our graph, with the final layer norm clip skip needs. */
async function clipTower(loaded: LoadedClip, settings: SessionSettings): Promise<{ tower: TextTower; finalNorm: FinalNorm }> {
  try {
    if (!loaded.textConfig) throw new Error(`${loaded.dir}: a ${loaded.kind} has no text tower`);
    const prefix = textTowerPrefix(loaded.weights);
    const key = (k: string) => (prefix ? `${prefix}.final_layer_norm.${k}` : `final_layer_norm.${k}`);
    const finalNorm = { weight: loaded.weights.get(key('weight')).data, bias: loaded.weights.get(key('bias')).data, eps: loaded.textConfig.layerNormEps };
    const clip = await ClipTextEncoder.create(loaded, settings);
    const tower: TextTower = {
      hiddenSize: clip.hiddenSize,
      layers: clip.config.layers,
      encode: (ids, seqLen) => clip.encode(ids, seqLen),
      release: () => clip.session.release(),
    };
    return { tower, finalNorm };
  } finally {
    loaded.weights.close();
  }
}

/** An exported text encoder (`model.onnx`): ids of whatever integer type it declares, first output the last hidden state. */
async function onnxTower(file: string, settings: SessionSettings): Promise<TextTower> {
  const session = await AdaptedSession.create(file, settings);
  const hidden = session.session.outputMetadata[0];
  const width = hidden?.isTensor ? hidden.shape.at(-1) : undefined;
  if (typeof width !== 'number') throw new Error(`${file}: its first output ('${session.outputNames[0]}') has no fixed hidden size`);
  return {
    hiddenSize: width,
    layers: 1,
    encode: async (ids, seqLen) => {
      const [lastHidden] = await session.run([{ names: ['input_ids'], value: { dtype: 'I64', shape: [ids.length / seqLen, seqLen], data: ids } }]);
      return { lastHidden };
    },
    release: () => session.release(),
  };
}

/**
 * A text encoder as the pipeline uses it: prompts in, [n, 77, hidden] conditioning out, with clip skip applied the
 * way diffusers does (an earlier layer's hidden state through the final layer norm).
 */
export class PromptEncoder {
  private constructor(
    readonly dir: string,
    private readonly tower: TextTower,
    private readonly finalNorm?: FinalNorm,
  ) {}

  /**
   * Load a CLIP folder (CLIPTextModel(WithProjection) or CLIPModel), the text encoder of a single-file checkpoint
   * (`configDir`: its config folder, if any), or an exported text encoder folder (`model.onnx`).
   */
  static async load(path: string, settings: SessionSettings = {}, configDir?: string): Promise<PromptEncoder> {
    if (statSync(path).isFile()) {
      const ckpt = readSingleFile(path, configDir);
      const { tower, finalNorm } = await clipTower(openClip(path, ckpt.textConfig, singleFileTextWeights(ckpt)), settings);
      return new PromptEncoder(path, tower, finalNorm);
    }
    if (existsSync(join(path, 'model.onnx'))) return new PromptEncoder(path, await onnxTower(join(path, 'model.onnx'), settings));
    const { tower, finalNorm } = await clipTower(loadClip(path), settings);
    return new PromptEncoder(path, tower, finalNorm);
  }

  get hiddenSize(): number {
    return this.tower.hiddenSize;
  }

  get layers(): number {
    return this.tower.layers;
  }

  /**
   * Conditioning for each prompt. `clipSkip` counts as A1111 and our CLI do: 0 or 1 = the last layer, 2 = the
   * penultimate (diffusers' clip_skip=1), and so on.
   */
  async encode(tokenizer: Tokenizer, prompts: string[], clipSkip = 0): Promise<{ embeds: F32Tensor; warnings: string[] }> {
    const warnings: string[] = [];
    const S = tokenizer.maxLength;
    const ids = new BigInt64Array(prompts.length * S);
    prompts.forEach((p, i) => {
      const e = tokenizer.encode(p);
      if (e.truncated) {
        warnings.push(`The following part of your input was truncated because CLIP can only handle sequences up to ${S} tokens: ${e.removedText}`);
      }
      e.inputIds.forEach((id, j) => (ids[i * S + j] = BigInt(id)));
    });
    const out = await this.tower.encode(ids, S);
    if (clipSkip <= 1) return { embeds: out.lastHidden, warnings };
    if (!out.hiddenStates || !this.finalNorm) throw new Error(`clip skip ${clipSkip}: ${this.dir} is an exported encoder that returns only its last hidden state`);
    if (clipSkip > this.layers) throw new Error(`clip skip ${clipSkip} is more than the encoder's ${this.layers} layers`);
    const h = out.hiddenStates[this.layers - (clipSkip - 1)];
    return { embeds: { dtype: 'F32', shape: h.shape, data: layerNorm(h.data, this.finalNorm) }, warnings };
  }

  async close(): Promise<void> {
    await this.tower.release();
  }
}

function layerNorm(x: Float32Array, { weight, bias, eps }: FinalNorm): Float32Array {
  const D = weight.length;
  const out = new Float32Array(x.length);
  for (let row = 0; row < x.length; row += D) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[row + i];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x[row + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / D + eps);
    for (let i = 0; i < D; i++) out[row + i] = (x[row + i] - mean) * inv * weight[i] + bias[i];
  }
  return out;
}
