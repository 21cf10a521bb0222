/**
 * CLIPScore with a CLIPModel checkpoint (both towers and their projections): for the toy world `weights/toy-clip`,
 * for Stable Diffusion 1.x e.g. openai/clip-vit-large-patch14.
 *
 * Convention (torchmetrics' CLIPScore, per image): 100 · max(cos(image_embeds, text_embeds), 0). Hessel et al.'s
 * CLIP-S is 2.5 · max(cos, 0), i.e. this value × 0.025. The mean over images is reported.
 *
 * The same image embeddings serve as FD-CLIP features (see fid-features.ts): the projected `image_embeds`, not
 * normalised.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ClipTextEncoder, ClipVisionEncoder, loadClip } from '../models/clip-loader.js';
import { clipPreprocess } from '../models/clip-preprocess.js';
import type { F32Tensor } from '../core/tensor.js';
import { Tokenizer } from '../pipeline/tokenizer.js';

const BATCH = 32;

export class ClipModel {
  private constructor(
    readonly dir: string,
    private readonly vision: ClipVisionEncoder,
    private readonly text: ClipTextEncoder,
    private readonly tokenizer: Tokenizer,
    readonly imageSize: number,
    readonly embedDim: number,
  ) {}

  static async load(dir: string): Promise<ClipModel> {
    if (!existsSync(join(dir, 'config.json'))) throw new Error(`${dir}: no config.json (expected a CLIPModel folder)`);
    const clip = loadClip(dir);
    try {
      if (clip.kind !== 'CLIPModel' || clip.projectionDim === undefined) {
        throw new Error(`${dir}: CLIPScore needs a CLIPModel with both towers and projections, got a ${clip.kind}`);
      }
      const [vision, text] = await Promise.all([ClipVisionEncoder.create(clip), ClipTextEncoder.create(clip)]);
      return new ClipModel(dir, vision, text, Tokenizer.load(dir), clip.visionConfig!.imageSize, clip.projectionDim);
    } finally {
      clip.weights.close();
    }
  }

  /** Projected image embeddings (not normalised), one per image file or encoded image buffer. */
  async imageEmbeds(images: Array<string | Buffer>): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    const plane = 3 * this.imageSize * this.imageSize;
    for (let i = 0; i < images.length; i += BATCH) {
      const chunk = await Promise.all(images.slice(i, i + BATCH).map((img) => clipPreprocess(img, this.imageSize)));
      const data = new Float32Array(chunk.length * plane);
      chunk.forEach((p, k) => {
        data.set(p.data, k * plane);
      });
      const enc = await this.vision.encode({
        dtype: 'F32',
        shape: [chunk.length, 3, this.imageSize, this.imageSize],
        data,
      });
      out.push(...rows(enc.imageEmbeds!));
    }
    return out;
  }

  /** Projected text embeddings of captions (truncated to the tokenizer's length, as torchmetrics does). */
  async textEmbeds(texts: string[]): Promise<Float32Array[]> {
    const S = this.tokenizer.maxLength;
    const out: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += BATCH) {
      const chunk = texts.slice(i, i + BATCH);
      const ids = new BigInt64Array(chunk.length * S);
      chunk.forEach((t, k) => {
        const tokenIds = this.tokenizer.encode(t).inputIds;
        for (let j = 0; j < tokenIds.length; j++) ids[k * S + j] = BigInt(tokenIds[j]);
      });
      out.push(...rows((await this.text.encode(ids, S)).textEmbeds!));
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([this.vision.session.release(), this.text.session.release()]);
  }
}

/** The rows of a [n, d] tensor. */
export function rows(t: F32Tensor): Float32Array[] {
  const [n, d] = t.shape;
  return Array.from({ length: n }, (_, i) => t.data.slice(i * d, (i + 1) * d));
}

export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`cosine: vectors of ${a.length} and ${b.length} values`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

/** torchmetrics' per-image CLIPScore: 100 · max(cos, 0). */
export function clipScore(imageEmbed: Float32Array, textEmbed: Float32Array): number {
  return 100 * Math.max(cosine(imageEmbed, textEmbed), 0);
}
