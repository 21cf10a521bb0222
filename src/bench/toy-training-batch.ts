import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Tensor } from '../core/tensor.js';
import { IN } from '../finetune/train-graph.js';
import type { loadClip } from '../models/clip-loader.js';
import type { Tokenizer } from '../pipeline/tokenizer.js';
import { randomTensor } from './reference.js';

export interface ToyTrainingBatch {
  rows: Array<{ safe: string; nsfw: string }>;
  /** The training graph's inputs for the first `n` rows, with random reference embeddings (and hidden states). */
  feeds(n: number, withHiddenStates?: boolean): Record<string, Tensor>;
}

/** The first `count` caption pairs of the toy ViSU training set, as the training-step benchmarks feed them. */
export function toyTrainingBatch(
  clip: ReturnType<typeof loadClip>,
  tokenizer: Tokenizer,
  count: number,
): ToyTrainingBatch {
  const file = fileURLToPath(new URL('../../eval/toy-visu/train.jsonl', import.meta.url));
  const rows = readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .slice(0, count)
    .map((l) => JSON.parse(l) as { safe: string; nsfw: string });
  const ids = (texts: string[]): Tensor => ({
    dtype: 'I64',
    shape: [texts.length, 77],
    data: BigInt64Array.from(texts.flatMap((t) => tokenizer.encode(t).inputIds.map(BigInt))),
  });
  const dim = clip.projectionDim!;
  return {
    rows,
    feeds: (n, withHiddenStates = false) => ({
      [IN.safeIds]: ids(rows.slice(0, n).map((r) => r.safe)),
      [IN.nsfwIds]: ids(rows.slice(0, n).map((r) => r.nsfw)),
      [IN.Sref]: randomTensor([n, dim], 21),
      [IN.Vref]: randomTensor([n, dim], 22),
      ...(withHiddenStates ? { [IN.SrefHidden]: randomTensor([n, 77, clip.textConfig!.hiddenSize], 23) } : {}),
    }),
  };
}
