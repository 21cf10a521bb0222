import type { F32Tensor } from '../core/tensor.js';
import type { Rng } from '../core/rng.js';
import type { AttackTower } from './text-tower.js';
import type { AttackVocabulary } from './vocabulary.js';

/** What a search for one target is given. */
export interface SearchProblem {
  tower: AttackTower;
  vocab: AttackVocabulary;
  /** [1, T, D] hidden states the prompt's first T positions should match (cosine over the whole window). */
  target: F32Tensor;
  /** Adversarial tokens the search starts from (K of them, all allowed). */
  start: Int32Array;
  /** Search steps: GCG steps or genetic generations; each scores `batch` candidate prompts. */
  budget: number;
  batch: number;
  rng: Rng;
  onStep?: (step: number, best: number) => void;
}

/** The best prompt a search found. */
export interface SearchResult {
  prompt: string;
  tokens: Int32Array;
  /** Cosine similarity of its last_hidden_state to the target. */
  similarity: number;
  /** Candidate prompts scored. */
  scored: number;
}

export interface Candidate {
  tokens: Int32Array;
  text: string;
  ids: Int32Array;
}

/** The candidates' full id sequences as one batch. */
export function idBatch(cands: Candidate[]): { ids: Int32Array; rows: number; seqLen: number } {
  const seqLen = cands[0].ids.length;
  const ids = new Int32Array(cands.length * seqLen);
  cands.forEach((c, i) => {
    ids.set(c.ids, i * seqLen);
  });
  return { ids, rows: cands.length, seqLen };
}

/** A prompt of `tokens`, its ids cut to the target's window, or undefined if the vocabulary refuses it. */
export function candidate(vocab: AttackVocabulary, tokens: Int32Array, target: F32Tensor): Candidate | undefined {
  const p = vocab.prompt(tokens);
  return p && { tokens, text: p.text, ids: p.ids.subarray(0, target.shape[1]) };
}

/** Score candidates in chunks of at most `batch`. */
export async function score(
  tower: AttackTower,
  target: F32Tensor,
  cands: Candidate[],
  batch: number,
): Promise<Float32Array> {
  const out = new Float32Array(cands.length);
  for (let i = 0; i < cands.length; i += batch)
    out.set(await tower.similarity(idBatch(cands.slice(i, i + batch)), target), i);
  return out;
}
