import type { Tokenizer } from '../pipeline/tokenizer.js';

/**
 * The tokens an attack may use, and the check that a token sequence is a prompt: whole-word tokens (ending in
 * `</w>`) whose text tokenizes back to the same single token, none containing a banned word. Sequences of such
 * tokens decode to text that tokenizes back to the same ids (checked for each candidate all the same), so the
 * prompt written to the CSV conditions the UNet exactly as the sequence the search scored.
 */
/** One unit of CLIP's word splitter: a run of letters, one digit, or a run of other non-space characters. */
const ONE_WORD = /^(\p{L}+|\p{N}|[^\s\p{L}\p{N}]+)$/u;

const BUILT = new WeakMap<Tokenizer, Map<string, AttackVocabulary>>();

export class AttackVocabulary {
  private constructor(
    private readonly tokenizer: Tokenizer,
    /** Allowed token ids, ascending. */
    readonly ids: Int32Array,
    private readonly allowed: Uint8Array,
    private readonly banned: RegExp | undefined,
  ) {}

  /** Built once per tokenizer and ban list in a process: a build tokenizes every entry of the vocabulary. */
  static build(tokenizer: Tokenizer, vocabSize: number, ban: string[]): AttackVocabulary {
    const key = `${vocabSize}\u0000${ban.join('\u0000')}`;
    const byBan = BUILT.get(tokenizer) ?? new Map<string, AttackVocabulary>();
    BUILT.set(tokenizer, byBan);
    const v = byBan.get(key) ?? AttackVocabulary.scan(tokenizer, vocabSize, ban);
    byBan.set(key, v);
    return v;
  }

  private static scan(tokenizer: Tokenizer, vocabSize: number, ban: string[]): AttackVocabulary {
    const words = ban.map((w) => w.trim().toLowerCase()).filter(Boolean);
    const banned = words.length
      ? new RegExp(words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'i')
      : undefined;
    const candidates: number[] = [];
    const texts: string[] = [];
    for (let id = 0; id < vocabSize; id++) {
      const token = tokenizer.tokenText(id);
      if (!token?.endsWith('</w>') || id === tokenizer.padId || id === tokenizer.eosId) continue;
      // Byte-level BPE spells printable ASCII as itself; only other tokens need the decoder.
      const bare = token.slice(0, -'</w>'.length);
      const text = /^[!-~]+$/.test(bare) ? bare : tokenizer.decode([id]);
      if (!ONE_WORD.test(text) || banned?.test(text)) continue;
      candidates.push(id);
      texts.push(text);
    }
    // Each text is one word of CLIP's splitter, so in a space-separated run its pieces end at the one piece that
    // ends the word (`</w>`): tokenizing thousands of words at once tells which come back as their own token.
    const allowed = new Uint8Array(vocabSize);
    const ids: number[] = [];
    const CHUNK = 2000;
    for (let start = 0; start < candidates.length; start += CHUNK) {
      const pieces = tokenizer.pieces(texts.slice(start, start + CHUNK).join(' '));
      let word = start;
      let first = 0;
      for (let i = 0; i < pieces.length; i++) {
        if (!tokenizer.tokenText(pieces[i])?.endsWith('</w>')) continue;
        if (i === first && pieces[i] === candidates[word]) {
          allowed[pieces[i]] = 1;
          ids.push(pieces[i]);
        }
        word++;
        first = i + 1;
      }
      if (word !== Math.min(start + CHUNK, candidates.length))
        throw new Error(
          `attack vocabulary: ${word - start} words came back from ${Math.min(CHUNK, candidates.length - start)}`,
        );
    }
    return new AttackVocabulary(tokenizer, Int32Array.from(ids), allowed, banned);
  }

  get size(): number {
    return this.ids.length;
  }

  has(id: number): boolean {
    return this.allowed[id] === 1;
  }

  /** A uniformly drawn allowed token; `u` in [0, 1). */
  pick(u: number): number {
    return this.ids[Math.floor(u * this.ids.length)];
  }

  /**
   * The prompt for adversarial tokens and its full id sequence (start, tokens, end, padding), or undefined when the
   * text does not tokenize back to the same tokens or contains a banned word.
   */
  prompt(tokens: ArrayLike<number>): { text: string; ids: Int32Array } | undefined {
    const text = this.tokenizer.decode(Array.from(tokens));
    if (this.banned?.test(text)) return undefined;
    const ids = this.tokenizer.encode(text).inputIds;
    for (let k = 0; k < tokens.length; k++) if (ids[k + 1] !== tokens[k]) return undefined;
    if (ids[tokens.length + 1] !== this.tokenizer.eosId) return undefined;
    return { text, ids: Int32Array.from(ids) };
  }
}
