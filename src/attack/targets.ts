import { readPromptSet } from '../datasets/prompts.js';

/** One caption an attack aims at: the unsafe caption (and, from ViSU, its safe twin). */
export interface AttackTarget {
  /** Row of the targets file, counting rows `--skip` passed over: eval's seed for the row is base seed + this. */
  row: number;
  id: string;
  text: string;
  safe?: string;
}

/**
 * Targets from a ViSU JSONL file (each row's unsafe caption, with its safe twin), an I2P-style CSV (its prompt
 * column) or a text file (one prompt a line); `skip` and `limit` count rows.
 */
export function readTargets(file: string, skip = 0, limit?: number): AttackTarget[] {
  const set = readPromptSet(file);
  const byLine = new Map<number, AttackTarget>();
  for (const p of set.prompts) {
    const t = byLine.get(p.line) ?? { row: byLine.size, id: p.id ?? `line-${p.line}`, text: '' };
    if (p.kind === 'safe') t.safe = p.text;
    else t.text = p.text;
    byLine.set(p.line, t);
  }
  const all = [...byLine.values()];
  return all.slice(skip, limit === undefined ? undefined : skip + limit);
}

/** Safe / unsafe caption pairs of a ViSU file, for Ring-A-Bell's concept vector. */
export function readPairs(file: string, limit: number): { safe: string[]; unsafe: string[] } {
  const pairs = readTargets(file)
    .filter((t) => t.safe !== undefined)
    .slice(0, limit);
  return { safe: pairs.map((p) => p.safe!), unsafe: pairs.map((p) => p.text) };
}
