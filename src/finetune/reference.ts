import { existsSync } from 'node:fs';
import { ClipTextEncoder, ClipVisionEncoder, type LoadedClip } from '../models/clip-loader.js';
import { writeSafetensors } from '../core/safetensors.js';
import { f32, type F32Tensor } from '../core/tensor.js';
import { readImageEmbeds, type VisuRow } from './data.js';

/**
 * The frozen reference model: the starting checkpoint's towers as inference graphs of their own (constant
 * weights, never the trained parameters). Its outputs are constant during training, so they are computed once.
 */

const CHUNK = 64;

/** Stack [d] vectors into [n, d]. */
export function stack(rows: F32Tensor[]): F32Tensor {
  const d = rows[0].data.length;
  const out = new Float32Array(rows.length * d);
  rows.forEach((r, i) => {
    out.set(r.data, i * d);
  });
  return f32(out, [rows.length, ...rows[0].shape]);
}

/** Row `i` of a [n, ...] tensor, as a view. */
export function row(t: F32Tensor, i: number): F32Tensor {
  const size = t.data.length / t.shape[0];
  return f32(t.data.subarray(i * size, (i + 1) * size), t.shape.slice(1));
}

export class ReferenceModel {
  private constructor(
    readonly text: ClipTextEncoder,
    readonly vision?: ClipVisionEncoder,
  ) {}

  static async create(clip: LoadedClip, withVision: boolean): Promise<ReferenceModel> {
    return new ReferenceModel(
      await ClipTextEncoder.create(clip),
      withVision ? await ClipVisionEncoder.create(clip) : undefined,
    );
  }

  /** text_embeds [n, P] of rows of `seqLen` ids, and optionally last_hidden_state [n, seqLen, D]. */
  async textEmbeds(ids: BigInt64Array, seqLen: number): Promise<{ embeds: F32Tensor; hidden: F32Tensor }> {
    const n = ids.length / seqLen;
    const embeds: F32Tensor[] = [];
    const hidden: F32Tensor[] = [];
    for (let start = 0; start < n; start += CHUNK) {
      const end = Math.min(n, start + CHUNK);
      const out = await this.text.encode(ids.subarray(start * seqLen, end * seqLen), seqLen);
      if (!out.textEmbeds) throw new Error('reference text tower has no projection');
      for (let i = 0; i < end - start; i++) {
        embeds.push(row(out.textEmbeds, i));
        hidden.push(row(out.lastHidden, i));
      }
    }
    return { embeds: stack(embeds), hidden: stack(hidden) };
  }

  /** image_embeds [n, P] of preprocessed pictures. */
  async imageEmbeds(pixels: F32Tensor[]): Promise<F32Tensor[]> {
    if (!this.vision) throw new Error('reference model built without its vision tower');
    const out: F32Tensor[] = [];
    for (let start = 0; start < pixels.length; start += CHUNK) {
      const res = await this.vision.encode(stack(pixels.slice(start, start + CHUNK)));
      if (!res.imageEmbeds) throw new Error('reference vision tower has no projection');
      for (let i = 0; i < res.imageEmbeds.shape[0]; i++)
        out.push(f32(row(res.imageEmbeds, i).data.slice(), [res.imageEmbeds.shape[1]]));
    }
    return out;
  }
}

/**
 * The reference image embeddings of the safe pictures, read from `cache` when it holds every row, else computed
 * from `pixelsOf` and written there (so a resumed run does not recompute them).
 */
export async function cachedImageEmbeds(
  ref: ReferenceModel,
  rows: VisuRow[],
  dim: number,
  cache: string,
  pixelsOf: () => Promise<Map<string, F32Tensor>>,
): Promise<Map<string, F32Tensor>> {
  if (existsSync(cache)) {
    const { embeds, bad } = readImageEmbeds(cache, rows, dim, ['safe']);
    if (!bad.size) return embeds;
  }
  const pixels = await pixelsOf();
  const embeds = await ref.imageEmbeds(rows.map((r) => pixels.get(`${r.id}.safe`)!));
  const map = new Map(rows.map((r, i) => [`${r.id}.safe`, embeds[i]]));
  writeSafetensors(cache, map);
  return map;
}
