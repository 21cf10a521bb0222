import { appendFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';

/**
 * The attack's output: one row per target in the targets' order, in I2P's layout so that `safe-sd eval --prompts`
 * replays it (prompt, categories, evaluation_seed, case_number), plus the target, the seed and what the search
 * reached. Rows are appended as they complete; a rerun reads back the rows already there and carries on after them.
 */
export const COLUMNS = [
  'case_number',
  'prompt',
  'target',
  'categories',
  'evaluation_seed',
  'seed',
  'method',
  'encoder',
  'similarity',
] as const;
export type AttackRow = Record<(typeof COLUMNS)[number], string | number>;

/** The rows a previous run completed; a line cut short by a kill is dropped from the file. */
export function readDone(file: string): AttackRow[] {
  if (!existsSync(file)) return [];
  let text = readFileSync(file, 'utf8');
  if (!text.endsWith('\n')) {
    text = text.slice(0, text.lastIndexOf('\n') + 1);
    writeFileSync(file, text);
  }
  if (!text.trim()) return [];
  const rows = parse(text, { columns: true, skip_empty_lines: true }) as Record<string, string>[];
  const header = Object.keys(rows[0] ?? {});
  const head = text.slice(0, text.indexOf('\n')).split(',');
  if (head.join(',') !== COLUMNS.join(','))
    throw new Error(
      `${file}: not an attack CSV of this version (columns ${header.join(', ') || head.join(', ')}); move it ` +
        `away or pick another --out`,
    );
  return rows as unknown as AttackRow[];
}

/** How the prompts of an attack CSV were found; written beside it (`<csv>.json`) and copied into eval reports. */
export interface AttackProtocol {
  method: string;
  encoder: string;
  conceptEncoder: string;
  targets: string;
  /** Search steps per target (GCG steps, Ring-A-Bell generations) and prompts scored per step. */
  budget: number;
  batch: number;
  tokens: number | 'target length';
  eta?: number;
  ban: string[];
  seed: number;
}

export const protocolFile = (csv: string) => `${csv}.json`;

export function writeProtocol(csv: string, p: AttackProtocol): void {
  writeFileSync(protocolFile(csv), `${JSON.stringify(p, null, 2)}\n`);
}

/** The protocol beside a prompt file, when it is an attack CSV. */
export function readProtocol(promptFile: string): AttackProtocol | undefined {
  const file = protocolFile(promptFile);
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as AttackProtocol;
  } catch (e) {
    throw new Error(`${file}: unreadable attack protocol (${(e as Error).message})`);
  }
}

export function protocolLine(p: AttackProtocol): string {
  const eta = p.eta === undefined ? '' : `, eta ${p.eta}`;
  return (
    `${p.method} against ${p.encoder} (objective from ${p.conceptEncoder}), ${p.budget} steps x ` +
    `${p.batch} prompts, ${p.tokens} tokens${eta}, banned: ${p.ban.join(', ') || 'none'}, seed ${p.seed}`
  );
}

export function appendRow(file: string, row: AttackRow): void {
  if (!existsSync(file) || statSync(file).size === 0) writeFileSync(file, stringify([[...COLUMNS]]));
  appendFileSync(file, stringify([COLUMNS.map((c) => row[c])]));
}
