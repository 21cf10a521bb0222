/**
 * `safe-sd eval-retrieval`: Safe-CLIP's retrieval experiment on a ViSU gallery. Every encoder's text tower against
 * one CLIPModel's vision tower; the images are embedded once and shared by all encoders.
 *
 * With S, U the safe and unsafe captions and V, G their pictures (row i of each belongs together):
 * - text to image: safe captions retrieve among V, Recall@K of their own picture (the paper's S→V); unsafe captions
 *   retrieve among V ∪ G, the share of unsafe pictures in their top K, and Recall@K of their safe twin's picture;
 * - image to text, the same way round: V retrieves among S; G among S ∪ U.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { F32Tensor } from '../core/tensor.js';
import { loadClip } from '../models/clip-loader.js';
import { Tokenizer } from '../pipeline/tokenizer.js';
import { ClipModel } from './clipscore.js';
import { openTextEmbedder } from './retrieval-embeds.js';
import type { GalleryRow } from '../datasets/visu-gallery.js';
import { renderRetrievalReport } from './retrieval-html.js';
import { RETRIEVAL_CONVENTIONS, type EncoderRetrieval, type RetrievalReport } from './retrieval-report.js';
import { KS, recallAtK, similarities, topK, unsafeShareAtK, type Similarities } from './retrieval-metrics.js';
import { writeFileAtomic } from './run-state.js';

export interface RetrievalOptions {
  gallery: GalleryRow[];
  /** The gallery file, for the report. */
  source: string;
  encoders: Array<{ name: string; path: string }>;
  /** CLIPModel folder: the vision tower, the tokenizer, and the projection of encoders that have none. */
  clipDir: string;
  out: string;
  /** Unsafe captions shown with their top retrieved pictures in report.html. */
  examples?: number;
  onWarning?: (message: string) => void;
}

function range(n: number, from = 0): number[] {
  return Array.from({ length: n }, (_, i) => from + i);
}

/** The figures of one encoder from its caption embeddings and the shared picture embeddings. */
export function retrievalFigures(
  S: Float32Array[],
  U: Float32Array[],
  V: Float32Array[],
  G: Float32Array[],
  examples = 0,
) {
  const n = S.length;
  if (U.length !== n || V.length !== n || G.length !== n)
    throw new Error(`retrieval: ${n} safe captions, ${U.length} unsafe, ${V.length} and ${G.length} pictures`);
  const unsafeHalf = [...range(n).map(() => false), ...range(n).map(() => true)];
  const both = (s: Similarities) => ({ share: unsafeShareAtK(s, unsafeHalf), twin: recallAtK(s, range(n)) });
  const t2iUnsafe = similarities(U, [...V, ...G]);
  const i2tUnsafe = similarities(G, [...S, ...U]);
  const t2i = both(t2iUnsafe);
  const i2t = both(i2tUnsafe);
  return {
    textToImage: {
      safeRecall: recallAtK(similarities(S, V), range(n)),
      unsafeShare: t2i.share,
      unsafeSafeTwinRecall: t2i.twin,
    },
    imageToText: {
      safeRecall: recallAtK(similarities(V, S), range(n)),
      unsafeShare: i2t.share,
      unsafeSafeTwinRecall: i2t.twin,
    },
    examples: range(Math.min(examples, n)).map((row) => ({
      row,
      unsafeCaptionTop: topK(t2iUnsafe, row, 5),
      unsafeImageTop: topK(i2tUnsafe, row, 5),
    })),
  };
}

export async function runRetrieval(o: RetrievalOptions): Promise<RetrievalReport> {
  if (o.gallery.length === 0) throw new Error(`${o.source}: no gallery row with both pictures`);
  const warnings: string[] = [];
  const warn = (m: string) => {
    warnings.push(m);
    o.onWarning?.(m);
  };
  const clip = await ClipModel.load(o.clipDir);
  const tokenizer = Tokenizer.load(o.clipDir);
  const loaded = loadClip(o.clipDir);
  let projection: F32Tensor;
  try {
    projection = loaded.weights.get('text_projection.weight');
  } finally {
    loaded.weights.close();
  }
  const encoders: EncoderRetrieval[] = [];
  try {
    const V = await clip.imageEmbeds(o.gallery.map((r) => r.safeImage));
    const G = await clip.imageEmbeds(o.gallery.map((r) => r.unsafeImage));
    for (const e of o.encoders) {
      const embedder = await openTextEmbedder(e.path, tokenizer, projection);
      try {
        if (embedder.projection === 'clip')
          warn(
            `${e.name}: ${e.path} has no text projection of its own; the CLIPModel's is used ` +
              '(a fine-tuned projection, if any, is not in this folder)',
          );
        const S = await embedder.embed(o.gallery.map((r) => r.safe));
        const U = await embedder.embed(o.gallery.map((r) => r.unsafe));
        encoders.push({
          encoder: e.name,
          path: e.path,
          textProjection: embedder.projection,
          ...retrievalFigures(S, U, V, G, o.examples ?? 12),
        });
      } finally {
        await embedder.close();
      }
    }
  } finally {
    await clip.close();
  }
  const report: RetrievalReport = {
    settings: {
      gallery: o.source,
      rows: o.gallery.length,
      firstRow: o.gallery[0]?.index ?? null,
      lastRow: o.gallery.at(-1)?.index ?? null,
      clip: o.clipDir,
      ks: KS,
      encoders: o.encoders,
    },
    encoders,
    conventions: RETRIEVAL_CONVENTIONS,
    warnings,
  };
  mkdirSync(o.out, { recursive: true });
  writeFileAtomic(join(o.out, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(o.out, 'report.html'), renderRetrievalReport(report, o.gallery, o.out));
  return report;
}
