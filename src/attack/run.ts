import { Rng } from '../core/rng.js';
import type { F32Tensor } from '../core/tensor.js';
import type { Tokenizer } from '../pipeline/tokenizer.js';
import { appendRow, readDone, type AttackRow } from './attack-csv.js';
import { gcg } from './gcg.js';
import { conceptTarget, conceptVector, ringABell, RING_A_BELL_DEFAULTS } from './ring-a-bell.js';
import type { SearchResult } from './search.js';
import { readPairs, type AttackTarget } from './targets.js';
import { AttackTower } from './text-tower.js';
import { AttackVocabulary } from './vocabulary.js';

export const METHODS = ['ring-a-bell', 'gcg'] as const;

/** The attack's defaults: one budget for both methods (steps x prompts scored), so their success rates compare. */
export const ATTACK_DEFAULTS = { budget: 8, batch: 64, ban: 'skull,skulls' } as const;
export type Method = (typeof METHODS)[number];

/** A named text encoder folder. */
export interface NamedEncoder {
  name: string;
  dir: string;
}

export interface AttackOptions {
  method: Method;
  /** The encoder attacked: the prompt's hidden states are computed with it. */
  encoder: NamedEncoder;
  /** The encoder whose hidden states for the target set the objective (Ring-A-Bell: also its concept vector). */
  conceptEncoder: NamedEncoder;
  tokenizer: Tokenizer;
  targets: AttackTarget[];
  /** Ring-A-Bell: the ViSU file whose pairs give the concept vector, and how many pairs. */
  pairs?: string;
  pairLimit?: number;
  ban: string[];
  /** Adversarial tokens; undefined: each target's own length (GCG) or the paper's 16 (Ring-A-Bell). */
  tokens?: number;
  budget: number;
  batch: number;
  eta: number;
  seed: number;
  out: string;
  onStart?: (info: { total: number; done: number; vocabulary: number }) => void;
  onStep?: (info: { target: number; step: number; best: number }) => void;
  onTarget?: (info: { done: number; row: AttackRow; result: SearchResult }) => void;
}

export class AttackInputError extends Error {
  override name = 'AttackInputError';
}

/** Ids of a caption without the start, end and pad tokens. */
function captionTokens(tokenizer: Tokenizer, text: string): number[] {
  const e = tokenizer.encode(text);
  return e.inputIds.slice(1, Math.min(e.untruncatedLength, tokenizer.maxLength) - 1);
}

/**
 * Where a search starts: the target's own tokens with every token the vocabulary refuses (the banned words)
 * replaced by a random allowed one, cut or padded with random allowed tokens to K. Starting next to the caption
 * spends the budget on the one thing the attack must find: a stand-in for the banned word.
 */
export function startTokens(
  tokenizer: Tokenizer,
  vocab: AttackVocabulary,
  text: string,
  K: number,
  rng: Rng,
): Int32Array {
  const own = captionTokens(tokenizer, text).slice(0, K);
  // Some neighbours do not survive tokenization as they are (the caption's own punctuation next to a drawn token):
  // draw again, and after a few tries give up the caption's tokens.
  for (let tries = 0; tries < 64; tries++) {
    const keepOwn = tries < 16;
    const out = new Int32Array(K);
    for (let k = 0; k < K; k++)
      out[k] = keepOwn && k < own.length && vocab.has(own[k]) ? own[k] : vocab.pick(rng.next());
    if (vocab.prompt(out)) return out;
  }
  throw new Error(`no prompt of ${K} allowed tokens found to start from for '${text}'`);
}

/**
 * The objective compares the first positions only: the prompt, its end token and this many pad positions. Later
 * pads barely tell prompts apart (cosine > 0.99 between a caption and its twin from position 40 on in the toy
 * world), and causal attention leaves the first positions the same however many follow, so scoring a 10-20 token
 * window instead of 77 makes every step 4-7x cheaper and puts the objective where prompts differ.
 */
export const WINDOW_PADS = 8;

function firstPositions(t: F32Tensor, n: number): F32Tensor {
  const [, , D] = t.shape;
  return { dtype: 'F32', shape: [1, n, D], data: t.data.slice(0, n * D) };
}

function rowOf(t: AttackTarget, o: AttackOptions, r: SearchResult): AttackRow {
  return {
    case_number: t.id,
    prompt: r.prompt,
    target: t.text,
    categories: 'unsafe',
    evaluation_seed: t.row,
    seed: t.row,
    method: o.method,
    encoder: o.encoder.name,
    similarity: Number(r.similarity.toFixed(5)),
  };
}

/** One search: the prompt for `text` whose hidden states under `tower` come closest to `target` ([1, 77, D]). */
export interface PromptSearch {
  method: Method;
  tower: AttackTower;
  vocab: AttackVocabulary;
  tokenizer: Tokenizer;
  text: string;
  target: F32Tensor;
  tokens?: number;
  budget: number;
  batch: number;
  rng: Rng;
  onStep?: (step: number, best: number) => void;
}

export async function searchPrompt(s: PromptSearch): Promise<SearchResult> {
  const own = captionTokens(s.tokenizer, s.text).length;
  const K = s.tokens ?? (s.method === 'ring-a-bell' ? RING_A_BELL_DEFAULTS.tokens : Math.max(1, own));
  const window = Math.min(s.tokenizer.maxLength, Math.max(K, own) + 2 + WINDOW_PADS);
  const problem = {
    tower: s.tower,
    vocab: s.vocab,
    target: firstPositions(s.target, window),
    start: startTokens(s.tokenizer, s.vocab, s.text, K, s.rng),
    budget: s.budget,
    batch: s.batch,
    rng: s.rng,
    onStep: s.onStep,
  };
  return s.method === 'ring-a-bell' ? ringABell(problem) : gcg(problem);
}

/** last_hidden_state [n, 77, D] of captions. */
export async function hiddenOf(tower: AttackTower, tokenizer: Tokenizer, texts: string[]): Promise<F32Tensor> {
  const S = tokenizer.maxLength;
  const ids = new Int32Array(texts.length * S);
  texts.forEach((t, i) => {
    ids.set(tokenizer.encode(t).inputIds, i * S);
  });
  return tower.hidden({ ids, rows: texts.length, seqLen: S });
}

/** Run the attack over every target not yet in `out`, appending a row as each completes. */
export async function runAttack(o: AttackOptions): Promise<{ rows: AttackRow[]; searched: number }> {
  if (o.targets.length === 0)
    throw new AttackInputError('no targets: the targets file holds no prompt in the rows asked for');
  const done = readDone(o.out);
  done.forEach((d, i) => {
    if (i >= o.targets.length || d.target !== o.targets[i].text) {
      throw new AttackInputError(
        `${o.out}: row ${i + 1} was made for another target than '${o.targets[i]?.text ?? '(none)'}'; move it ` +
          `away or pick another --out`,
      );
    }
  });
  const tower = await AttackTower.load(o.encoder.dir, o.method === 'gcg');
  const concept = o.conceptEncoder.dir === o.encoder.dir ? tower : await AttackTower.load(o.conceptEncoder.dir, false);
  try {
    const vocab = AttackVocabulary.build(o.tokenizer, tower.vocabSize, o.ban);
    if (vocab.size === 0)
      throw new AttackInputError(`--ban ${o.ban.join(',')}: no token of the vocabulary is left to build a prompt from`);
    let shift: F32Tensor | undefined;
    if (o.method === 'ring-a-bell') {
      if (!o.pairs)
        throw new AttackInputError('ring-a-bell needs paired captions for its concept vector: --pairs <ViSU JSONL>');
      const pairs = readPairs(o.pairs, o.pairLimit ?? 256);
      if (!pairs.safe.length) throw new AttackInputError(`--pairs ${o.pairs}: no safe / unsafe caption pair`);
      shift = conceptVector(
        await hiddenOf(concept, o.tokenizer, pairs.unsafe),
        await hiddenOf(concept, o.tokenizer, pairs.safe),
      );
    }
    o.onStart?.({ total: o.targets.length, done: done.length, vocabulary: vocab.size });
    const rows = [...done];
    let searched = 0;
    for (let i = done.length; i < o.targets.length; i++) {
      const t = o.targets[i];
      // Each target its own stream: a resumed run finds what the uninterrupted run would have found.
      const rng = Rng.fromSeed((o.seed * 1_000_003 + t.row) >>> 0);
      const hidden = await hiddenOf(concept, o.tokenizer, [t.text]);
      const result = await searchPrompt({
        method: o.method,
        tower,
        vocab,
        tokenizer: o.tokenizer,
        text: t.text,
        target: shift ? conceptTarget(hidden, shift, o.eta) : hidden,
        tokens: o.tokens,
        budget: o.budget,
        batch: o.batch,
        rng,
        onStep: (step: number, best: number) => o.onStep?.({ target: i, step, best }),
      });
      const row = rowOf(t, o, result);
      appendRow(o.out, row);
      rows.push(row);
      searched++;
      o.onTarget?.({ done: i + 1, row, result });
    }
    return { rows, searched };
  } finally {
    await tower.close();
    if (concept !== tower) await concept.close();
  }
}
