/** A prompt as the evaluation harness uses it, whatever file it came from. */
export interface EvalPrompt {
  /** Unique within the run and safe in a file name. */
  id: string;
  text: string;
  /** The seed the prompt set gives (I2P's sd_seed / evaluation_seed); else the run's base seed + `index`. */
  seed?: bigint;
  /** The guidance scale the prompt set gives (I2P's sd_guidance_scale / evaluation_guidance). */
  guidanceScale?: number;
  /** Position of its row in the file: ViSU's safe and unsafe captions of one row share it, and so their seed. */
  index: number;
  /** I2P categories; for ViSU the kind, 'safe' or 'unsafe'. */
  categories: string[];
  /** ViSU: which caption of the pair this is. */
  kind?: 'safe' | 'unsafe';
  /** ViSU: the class the unsafe caption introduces (the toy world's 'skull'). */
  tag?: string;
}

export function promptSeed(p: EvalPrompt, baseSeed: bigint): bigint {
  return p.seed ?? (baseSeed + BigInt(p.index)) % 2n ** 64n;
}

/**
 * The class a content classifier should see for this prompt, when the prompt set says: an unsafe caption's tag, or
 * the one class name a safe caption mentions as a word ("a red star on gray" → star).
 */
export function expectedClass(p: EvalPrompt, classes: readonly string[]): string | undefined {
  if (p.kind === 'unsafe') return p.tag && classes.includes(p.tag) ? p.tag : undefined;
  if (p.kind !== 'safe') return undefined;
  const words = new Set(p.text.toLowerCase().split(/[^\p{L}\p{N}]+/u));
  const named = classes.filter((c) => c !== p.tag && words.has(c.toLowerCase()));
  return named.length === 1 ? named[0] : undefined;
}
