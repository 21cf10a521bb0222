import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Config } from '../core/config.js';

/** One prompt as the text encoder sees it: padded or truncated to the model's length. */
export interface Encoded {
  /** `model_max_length` ids: start token, text, end token, then pad tokens. */
  inputIds: number[];
  /** 1 over the start token, the text and the end token; 0 over padding. */
  attentionMask: number[];
  /** How many ids the prompt had (with start and end tokens) before truncation. */
  untruncatedLength: number;
  truncated: boolean;
  /** The text of the tokens that truncation cut off ('' when nothing was cut), for the caller's warning. */
  removedText: string;
}

const BOS = '<|startoftext|>';
const EOS = '<|endoftext|>';
// CLIP's word splitter (openai's simple_tokenizer pattern): special tokens, English contractions, letter runs,
// single digits, and runs of other non-space characters.
const CLIP_SPLIT =
  "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";
// Without a model_max_length the text encoder's 77 positions are the limit, as in every CLIP text encoder.
const DEFAULT_MAX_LENGTH = 77;

/** A special token as configs write it: a plain string or an AddedToken object `{content: ...}`. */
function tokenText(value: unknown, file: string, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  throw new Error(`${file}: '${key}' is ${JSON.stringify(value)}, expected a token string`);
}

/**
 * The tokenizer.json that transformers' CLIP converter writes for a vocab.json + merges.txt pair (SD 1.x
 * checkpoints ship only those): NFC + whitespace collapse + lowercase, CLIP's word split then byte-level
 * mapping, BPE with a `</w>` end-of-word suffix, and start/end tokens around each prompt.
 */
function clipTokenizerJson(dir: string): Record<string, unknown> {
  const vocabFile = join(dir, 'vocab.json');
  const mergesFile = join(dir, 'merges.txt');
  const vocab = Config.read(vocabFile).raw as Record<string, number>;
  const idOf = (token: string): number => {
    const id = vocab[token];
    if (!Number.isInteger(id)) throw new Error(`${vocabFile}: no id for '${token}'`);
    return id;
  };
  // Like CLIP's own tokenizer: skip the '#version' header, keep the first 49152 - 256 - 2 merges.
  const lines = readFileSync(mergesFile, 'utf8')
    .trim()
    .split('\n')
    .slice(1, 49152 - 256 - 2 + 1);
  const merges = lines.map((line, i) => {
    const pair = line.trim().split(' ');
    if (pair.length !== 2)
      throw new Error(`${mergesFile}: line ${i + 2} is not a pair of symbols: ${JSON.stringify(line)}`);
    return pair;
  });
  const special = (content: string) => ({
    id: idOf(content),
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: '1.0',
    added_tokens: [special(BOS), special(EOS)],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'NFC' },
        { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
        { type: 'Lowercase' },
      ],
    },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: CLIP_SPLIT }, behavior: 'Removed', invert: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    post_processor: {
      type: 'RobertaProcessing',
      sep: [EOS, idOf(EOS)],
      cls: [BOS, idOf(BOS)],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: EOS,
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/** CLIP's tokenizer as Stable Diffusion pipelines use it: fixed-length ids, padded and truncated like diffusers. */
export class Tokenizer {
  private constructor(
    private readonly inner: HfTokenizer,
    readonly maxLength: number,
    readonly padId: number,
    readonly eosId: number,
  ) {}

  /**
   * Load from a tokenizer folder: `tokenizer.json`, or `vocab.json` + `merges.txt`; `tokenizer_config.json` and
   * `special_tokens_map.json` (which wins, as in transformers) set the pad token and the length. `configFile`
   * replaces the folder's tokenizer_config.json (a single-file SD 2.x checkpoint pads with '!' using SD 1.x's
   * vocabulary).
   */
  static load(dir: string, configFile = join(dir, 'tokenizer_config.json')): Tokenizer {
    const jsonFile = join(dir, 'tokenizer.json');
    let spec: Record<string, unknown>;
    if (existsSync(jsonFile)) spec = Config.read(jsonFile).raw;
    else if (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt'))) spec = clipTokenizerJson(dir);
    else throw new Error(`${dir}: no tokenizer.json, nor vocab.json with merges.txt`);

    const config = existsSync(configFile) ? Config.read(configFile).raw : {};
    const mapFile = join(dir, 'special_tokens_map.json');
    const map = existsSync(mapFile) ? Config.read(mapFile).raw : {};

    const eos =
      tokenText(map.eos_token, mapFile, 'eos_token') ?? tokenText(config.eos_token, configFile, 'eos_token') ?? EOS;
    // CLIPTokenizer pads with its end token unless told otherwise (SD 2.x checkpoints pad with '!').
    const pad =
      tokenText(map.pad_token, mapFile, 'pad_token') ?? tokenText(config.pad_token, configFile, 'pad_token') ?? eos;
    const maxLength = config.model_max_length ?? DEFAULT_MAX_LENGTH;
    if (!Number.isInteger(maxLength) || (maxLength as number) < 2 || (maxLength as number) > 4096) {
      throw new Error(
        `${configFile}: 'model_max_length' is ${JSON.stringify(maxLength)}, expected the text encoder's length (77)`,
      );
    }

    const inner = new HfTokenizer(spec, config);
    const idOf = (token: string, what: string): number => {
      const id = inner.token_to_id(token);
      if (id === undefined) throw new Error(`${dir}: the ${what} '${token}' is not in the vocabulary`);
      return id;
    };
    return new Tokenizer(inner, maxLength as number, idOf(pad, 'pad token'), idOf(eos, 'end token'));
  }

  encode(text: string): Encoded {
    const ids = this.inner.encode(text).ids;
    const n = this.maxLength;
    const truncated = ids.length > n;
    // Truncation keeps the end token last, as transformers does; the cut-off part is what diffusers reports.
    const kept = truncated ? [...ids.slice(0, n - 1), this.eosId] : ids;
    const removedText = truncated ? this.decode(ids.slice(n - 1, -1)) : '';
    const inputIds = [...kept, ...new Array<number>(n - kept.length).fill(this.padId)];
    const attentionMask = inputIds.map((_, i) => (i < kept.length ? 1 : 0));
    return { inputIds, attentionMask, untruncatedLength: ids.length, truncated, removedText };
  }

  encodeBatch(texts: readonly string[]): Encoded[] {
    return texts.map((t) => this.encode(t));
  }

  /** The vocabulary entry of an id as the BPE model spells it (`skull</w>`), or undefined outside the vocabulary. */
  tokenText(id: number): string | undefined {
    return this.inner.id_to_token(id) ?? undefined;
  }

  /** Ids of a text without start and end tokens, padding or truncation, however long it is. */
  pieces(text: string): number[] {
    const ids = this.inner.encode(text).ids;
    return ids.slice(1, -1);
  }

  /** Text of ids, special tokens left out. */
  decode(ids: readonly number[]): string {
    return this.inner.decode([...ids], { skip_special_tokens: true }).trim();
  }
}
