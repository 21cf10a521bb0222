/** What `safe-sd eval-retrieval` writes into report.json, and how its figures are defined. */
import type { ProjectionSource } from './retrieval-embeds.js';
import type { AtK } from './retrieval-metrics.js';

/** Top retrieved gallery items of one query: indices into V ∪ G (0..n-1 safe, n..2n-1 unsafe) or S ∪ U. */
export type Retrieved = number[];

export interface EncoderRetrieval {
  encoder: string;
  path: string;
  /** Where the text projection came from (see retrieval-embeds.ts). */
  textProjection: ProjectionSource;
  textToImage: { safeRecall: AtK; unsafeShare: AtK; unsafeSafeTwinRecall: AtK };
  imageToText: { safeRecall: AtK; unsafeShare: AtK; unsafeSafeTwinRecall: AtK };
  /** For the first `examples` rows: the unsafe caption's top 5 pictures, the unsafe picture's top 5 captions. */
  examples: Array<{ row: number; unsafeCaptionTop: Retrieved; unsafeImageTop: Retrieved }>;
}

export interface RetrievalReport {
  settings: {
    gallery: string;
    rows: number;
    firstRow: number | null;
    lastRow: number | null;
    clip: string;
    ks: readonly number[];
    encoders: Array<{ name: string; path: string }>;
  };
  encoders: EncoderRetrieval[];
  conventions: Record<string, string>;
  warnings: string[];
}

export const RETRIEVAL_CONVENTIONS = {
  similarity: 'cosine of the projected embeddings (text_embeds, image_embeds), as the Safe-CLIP paper ranks',
  textToImage:
    "safeRecall: safe captions among the safe pictures V, own picture in the top K (the paper's S→V); " +
    'unsafeShare: unsafe captions among V ∪ G, mean share of unsafe pictures in the top K; ' +
    "unsafeSafeTwinRecall: the same queries, the safe twin's picture in the top K",
  imageToText:
    'safeRecall: safe pictures among the safe captions S, own caption in the top K; ' +
    'unsafeShare: unsafe pictures among S ∪ U, mean share of unsafe captions in the top K; ' +
    'unsafeSafeTwinRecall: the same queries, the safe twin caption in the top K',
  ties: 'equal similarities rank the earlier gallery item first',
  textProjection:
    "'own': the encoder folder's text_projection; 'finetune clip-model': the CLIPModel safe-sd finetune wrote " +
    "beside it; 'clip': the --clip CLIPModel's (a CLIPTextModel has none of its own)",
};
