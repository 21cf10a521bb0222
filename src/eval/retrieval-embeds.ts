/**
 * Text embeddings of one encoder in the CLIPModel's joint space, for retrieval against its vision tower.
 *
 * A text encoder served to Stable Diffusion is usually a CLIPTextModel: the tower without its projection. Safe-CLIP
 * fine-tuning trains the projection too, so the encoder's own projection is used where one can be found: in the
 * folder itself (CLIPModel, CLIPTextModelWithProjection), else in the whole CLIPModel `safe-sd finetune` writes
 * beside it (`clip-model/`); failing both, the CLIPModel's `text_projection`, and the report says so.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CLIP_MODEL_DIR } from '../finetune/train.js';
import { ClipTextEncoder, loadClip } from '../models/clip-loader.js';
import type { F32Tensor } from '../core/tensor.js';
import type { Tokenizer } from '../pipeline/tokenizer.js';
import { rows } from './clipscore.js';

const BATCH = 32;

/** Where an encoder's projection into the joint space came from. */
export type ProjectionSource = 'own' | 'finetune clip-model' | 'clip';

export interface TextEmbedder {
  readonly projection: ProjectionSource;
  /** Projected text embeddings (not normalised), one per caption. */
  embed(texts: string[]): Promise<Float32Array[]>;
  close(): Promise<void>;
}

/** The text tower of `dir` with the best projection available; `clipProjection` is the CLIPModel's [p, hidden]. */
export async function openTextEmbedder(
  dir: string,
  tokenizer: Tokenizer,
  clipProjection: F32Tensor,
): Promise<TextEmbedder> {
  const finetuned = join(dir, CLIP_MODEL_DIR);
  let loaded = loadClip(dir);
  let projection: ProjectionSource = 'own';
  if (loaded.projectionDim === undefined && existsSync(join(finetuned, 'config.json'))) {
    loaded.weights.close();
    loaded = loadClip(finetuned);
    projection = 'finetune clip-model';
  }
  if (loaded.projectionDim === undefined) projection = 'clip';
  let encoder: ClipTextEncoder;
  try {
    encoder = await ClipTextEncoder.create(loaded);
  } finally {
    loaded.weights.close();
  }
  const [p, hidden] = clipProjection.shape;
  if (projection === 'clip' && hidden !== encoder.hiddenSize) {
    await encoder.session.release();
    throw new Error(`${dir}: hidden size ${encoder.hiddenSize}, but the CLIPModel's text_projection takes ${hidden}`);
  }
  return {
    projection,
    async embed(texts) {
      const S = tokenizer.maxLength;
      const out: Float32Array[] = [];
      for (let i = 0; i < texts.length; i += BATCH) {
        const chunk = texts.slice(i, i + BATCH);
        const ids = new BigInt64Array(chunk.length * S);
        for (const [k, t] of chunk.entries()) {
          for (const [j, id] of tokenizer.encode(t).inputIds.entries()) ids[k * S + j] = BigInt(id);
        }
        const enc = await encoder.encode(ids, S);
        if (enc.textEmbeds) out.push(...rows(enc.textEmbeds));
        else out.push(...rows(enc.pooled).map((x) => project(x, clipProjection.data, p)));
      }
      return out;
    },
    close: () => encoder.session.release(),
  };
}

/** x @ Wᵀ for a bias-free Linear weight W [p, x.length]. */
function project(x: Float32Array, w: Float32Array, p: number): Float32Array {
  const out = new Float32Array(p);
  for (let r = 0; r < p; r++) {
    let s = 0;
    for (let c = 0; c < x.length; c++) s += x[c] * w[r * x.length + c];
    out[r] = s;
  }
  return out;
}
