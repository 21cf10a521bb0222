import { searchPrompt } from '../attack/run.js';
import { AttackTower } from '../attack/text-tower.js';
import { AttackVocabulary } from '../attack/vocabulary.js';
import type { ClipTextConfig } from '../models/clip.js';
import type { F32Tensor } from '../core/tensor.js';
import { MemoryWeights } from '../core/weights.js';
import type { Tokenizer } from '../pipeline/tokenizer.js';
import { Rng } from '../core/rng.js';

/**
 * Adversarial training in the spirit of AdvUnlearn (Zhang et al., 2024): every `every` steps a short GCG attack
 * against the encoder being trained looks, for a few unsafe captions, for prompts (banned words left out) whose
 * hidden states under that encoder come closest to the original encoder's for the unsafe caption. Until the next
 * search those prompts join every batch as unsafe captions paired with the row's safe twin, so the losses pull them
 * to the safe twin's embedding as they do the plain unsafe captions.
 */
export interface AdversarialOptions {
  /** Search new prompts every this many steps (and at the first step of a run). */
  every: number;
  /** Unsafe captions attacked per search; each adds one pair to every batch. */
  captions: number;
  /** GCG steps per caption, and candidates scored per step. */
  budget: number;
  batch: number;
  ban: string[];
}

export const ADVERSARIAL_DEFAULTS: AdversarialOptions = {
  every: 50,
  captions: 8,
  budget: 4,
  batch: 32,
  ban: ['skull', 'skulls'],
};

/** The prompts of the last search: text, and the data row whose safe twin is their target. */
export interface AdversarialPairs {
  prompts: string[];
  rows: number[];
  /** Mean similarity the search reached (to the original encoder's hidden states of the unsafe captions). */
  similarity: number;
}

export class AdversarialSearch {
  private vocab?: AttackVocabulary;

  constructor(
    private readonly o: AdversarialOptions,
    private readonly cfg: ClipTextConfig,
    private readonly tokenizer: Tokenizer,
    /** The original encoder's last_hidden_state of rows' unsafe captions, [n, 77, D]. */
    private readonly targetHidden: (rows: number[]) => Promise<F32Tensor>,
    private readonly seed: number,
  ) {}

  /** New adversarial prompts against the encoder with weights `weights`, for captions drawn from `unsafe`. */
  async search(step: number, weights: Map<string, F32Tensor>, unsafe: string[]): Promise<AdversarialPairs> {
    const cfg = this.cfg;
    const tower = await AttackTower.fromWeights(`training step ${step}`, new MemoryWeights(weights), cfg, true);
    try {
      this.vocab ??= AttackVocabulary.build(this.tokenizer, cfg.vocabSize, this.o.ban);
      const rng = Rng.fromSeed((this.seed * 7919 + step) >>> 0);
      const rows = rng.permutation(unsafe.length).slice(0, this.o.captions);
      const targets = await this.targetHidden(rows);
      const [, S, D] = targets.shape;
      const prompts: string[] = [];
      let total = 0;
      for (let i = 0; i < rows.length; i++) {
        const target: F32Tensor = {
          dtype: 'F32',
          shape: [1, S, D],
          data: targets.data.subarray(i * S * D, (i + 1) * S * D),
        };
        const r = await searchPrompt({
          method: 'gcg',
          tower,
          vocab: this.vocab,
          tokenizer: this.tokenizer,
          text: unsafe[rows[i]],
          target,
          budget: this.o.budget,
          batch: this.o.batch,
          rng,
        });
        prompts.push(r.prompt);
        total += r.similarity;
      }
      return { prompts, rows, similarity: total / rows.length };
    } finally {
      await tower.close();
    }
  }
}
