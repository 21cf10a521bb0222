import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ClipTextEncoder, loadClip, openClip, type LoadedClip } from '../models/clip-loader.js';
import { readSingleFile, singleFileTextWeights } from '../models/single-file.js';
import { AdaptedSession } from '../onnx/adapted-session.js';
import type { SessionSettings } from '../onnx/session.js';
import type { F32Tensor } from '../core/tensor.js';
import type { Tokenizer } from './tokenizer.js';

/** What the pipeline needs of a text tower: ids in, the conditioning for a clip skip out. */
interface TextTower {
  hiddenSize: number;
  /** Transformer layers; an exported encoder counts as one (it returns only its last hidden state). */
  layers: number;
  encode(ids: BigInt64Array, seqLen: number, clipSkip: number): Promise<F32Tensor>;
  release(): Promise<void>;
}

/** A transformers CLIP text tower, built as our graph (clip skip included). */
async function clipTower(loaded: LoadedClip, settings: SessionSettings): Promise<TextTower> {
  try {
    const clip = await ClipTextEncoder.create(loaded, settings);
    return {
      hiddenSize: clip.hiddenSize,
      layers: clip.config.layers,
      encode: (ids, seqLen, clipSkip) => clip.conditioning(ids, seqLen, clipSkip),
      release: () => clip.session.release(),
    };
  } finally {
    loaded.weights.close();
  }
}

/**
 * An exported text encoder (`model.onnx`): ids of whatever integer type it declares, first output the last hidden
 * state.
 */
async function onnxTower(file: string, settings: SessionSettings): Promise<TextTower> {
  const session = await AdaptedSession.create(file, settings);
  const hidden = session.session.outputMetadata[0];
  const width = hidden?.isTensor ? hidden.shape.at(-1) : undefined;
  if (typeof width !== 'number')
    throw new Error(`${file}: its first output ('${session.outputNames[0]}') has no fixed hidden size`);
  return {
    hiddenSize: width,
    layers: 1,
    encode: async (ids, seqLen, clipSkip) => {
      if (clipSkip > 1) {
        throw new Error(`clip skip ${clipSkip}: ${file} is an exported encoder: it returns only its last hidden state`);
      }
      const [lastHidden] = await session.run([
        { names: ['input_ids'], value: { dtype: 'I64', shape: [ids.length / seqLen, seqLen], data: ids } },
      ]);
      return lastHidden;
    },
    release: () => session.release(),
  };
}

/**
 * A text encoder as the pipeline uses it: prompts in, [n, 77, hidden] conditioning out, with clip skip applied the
 * way diffusers does (an earlier layer's hidden state through the final layer norm, inside the CLIP graph).
 */
export class PromptEncoder {
  private constructor(
    readonly dir: string,
    private readonly tower: TextTower,
  ) {}

  /**
   * Load a CLIP folder (CLIPTextModel(WithProjection) or CLIPModel), the text encoder of a single-file checkpoint
   * (`configDir`: its config folder, if any), or an exported text encoder folder (`model.onnx`).
   */
  static async load(path: string, settings: SessionSettings = {}, configDir?: string): Promise<PromptEncoder> {
    if (statSync(path).isFile()) {
      const ckpt = readSingleFile(path, configDir);
      const loaded = openClip(path, ckpt.textConfig, singleFileTextWeights(ckpt));
      return new PromptEncoder(path, await clipTower(loaded, settings));
    }
    if (existsSync(join(path, 'model.onnx')))
      return new PromptEncoder(path, await onnxTower(join(path, 'model.onnx'), settings));
    return new PromptEncoder(path, await clipTower(loadClip(path), settings));
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
  async encode(
    tokenizer: Tokenizer,
    prompts: string[],
    clipSkip = 0,
  ): Promise<{ embeds: F32Tensor; warnings: string[] }> {
    const warnings: string[] = [];
    const S = tokenizer.maxLength;
    const ids = new BigInt64Array(prompts.length * S);
    prompts.forEach((p, i) => {
      const e = tokenizer.encode(p);
      if (e.truncated) {
        warnings.push(
          `The following part of your input was truncated because CLIP can only handle sequences up to ${S} ` +
            `tokens: ${e.removedText}`,
        );
      }
      e.inputIds.forEach((id, j) => {
        ids[i * S + j] = BigInt(id);
      });
    });
    return { embeds: await this.tower.encode(ids, S, clipSkip), warnings };
  }

  async close(): Promise<void> {
    await this.tower.release();
  }
}
