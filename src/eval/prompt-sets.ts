import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parse } from 'csv-parse/sync';
import type { EvalPrompt } from './eval-prompt.js';

export interface PromptProblem {
  line: number;
  message: string;
}

export interface PromptSet {
  format: 'i2p-csv' | 'visu-jsonl' | 'text';
  prompts: EvalPrompt[];
  /** Rows that were skipped, with their line numbers: a bad row never stops a run. */
  problems: PromptProblem[];
}

/** The first column of the header among `names` (files in the wild name the same column differently). */
function column(header: string[], ...names: string[]): number {
  for (const n of names) {
    const i = header.indexOf(n);
    if (i >= 0) return i;
  }
  return -1;
}

/** An id usable in a file name: the row's own id when it is one, else the line number. */
function safeId(raw: unknown, line: number): string {
  const s = String(raw ?? '').trim();
  return /^[A-Za-z0-9._-]{1,64}$/.test(s) ? s : `line-${line}`;
}

/**
 * The I2P layout (ESD's copy and the original): prompt, categories (comma-separated in one field), seed
 * (`sd_seed` or `evaluation_seed`), guidance (`sd_guidance_scale` or `evaluation_guidance`). COCO caption files
 * share the layout (prompt, evaluation_seed).
 */
function readCsv(text: string): PromptSet {
  const problems: PromptProblem[] = [];
  const records = parse(text, { relax_column_count: true, relax_quotes: true, skip_empty_lines: true, info: true, bom: true }) as unknown as Array<{ record: string[]; info: { lines: number } }>;
  if (records.length === 0) return { format: 'i2p-csv', prompts: [], problems: [{ line: 1, message: 'empty file' }] };
  const header = records[0].record.map((h) => h.trim());
  const prompt = column(header, 'prompt');
  if (prompt < 0) return { format: 'i2p-csv', prompts: [], problems: [{ line: 1, message: `no 'prompt' column in the header (${header.join(', ')})` }] };
  const categories = column(header, 'categories');
  const seed = column(header, 'sd_seed', 'evaluation_seed');
  const guidance = column(header, 'sd_guidance_scale', 'evaluation_guidance');
  const id = column(header, 'case_number', 'image_id', '');
  const prompts: EvalPrompt[] = [];
  for (let r = 1; r < records.length; r++) {
    const { record: row, info } = records[r];
    const line = info.lines;
    if (row.length !== header.length) {
      problems.push({ line, message: `${row.length} fields where the header has ${header.length}` });
      continue;
    }
    const text = row[prompt].trim();
    if (!text) {
      problems.push({ line, message: 'empty prompt' });
      continue;
    }
    const p: EvalPrompt = { id: safeId(id >= 0 ? row[id] : undefined, line), text, index: prompts.length, categories: categories >= 0 ? row[categories].split(',').map((c) => c.trim()).filter(Boolean) : [] };
    if (seed >= 0 && row[seed].trim()) {
      if (!/^\d+$/.test(row[seed].trim())) {
        problems.push({ line, message: `seed '${row[seed]}' is not a non-negative integer` });
        continue;
      }
      p.seed = BigInt(row[seed].trim()) % 2n ** 64n;
    }
    if (guidance >= 0 && row[guidance].trim()) {
      const g = Number(row[guidance]);
      if (!Number.isFinite(g) || g < 0) {
        problems.push({ line, message: `guidance '${row[guidance]}' is not a finite number >= 0` });
        continue;
      }
      p.guidanceScale = g;
    }
    prompts.push(p);
  }
  return { format: 'i2p-csv', prompts, problems };
}

/** ViSU rows `{id, safe, nsfw, tag}`: two prompts a row, sharing the row's index (and so its seed). */
function readJsonl(text: string): PromptSet {
  const problems: PromptProblem[] = [];
  const prompts: EvalPrompt[] = [];
  const ids = new Set<string>();
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    if (!raw.trim()) return;
    let row: { id?: unknown; safe?: unknown; nsfw?: unknown; tag?: unknown };
    try {
      row = JSON.parse(raw);
    } catch (e) {
      problems.push({ line, message: `not valid JSON: ${(e as Error).message}` });
      return;
    }
    if (typeof row !== 'object' || row === null) return void problems.push({ line, message: 'not a JSON object' });
    if (typeof row.safe !== 'string' || !row.safe.trim() || typeof row.nsfw !== 'string' || !row.nsfw.trim()) {
      problems.push({ line, message: "needs non-empty 'safe' and 'nsfw' captions" });
      return;
    }
    let id = safeId(row.id, line);
    if (ids.has(id)) id = `line-${line}`;
    ids.add(id);
    const index = prompts.length / 2;
    const tag = typeof row.tag === 'string' ? row.tag : undefined;
    prompts.push({ id: `${id}-safe`, text: row.safe, index, categories: ['safe'], kind: 'safe', tag });
    prompts.push({ id: `${id}-unsafe`, text: row.nsfw, index, categories: ['unsafe'], kind: 'unsafe', tag });
  });
  return { format: 'visu-jsonl', prompts, problems };
}

function readText(text: string): PromptSet {
  const prompts: EvalPrompt[] = [];
  text.split('\n').forEach((raw, i) => {
    const t = raw.trim();
    if (t) prompts.push({ id: `line-${i + 1}`, text: t, index: prompts.length, categories: [] });
  });
  return { format: 'text', prompts, problems: [] };
}

/** Read a prompt file by its extension: `.csv` (I2P / COCO layout), `.jsonl` (ViSU), anything else one prompt a line. */
export function readPromptSet(file: string, limit?: number): PromptSet {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read the prompt file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const name = basename(file).toLowerCase();
  const set = name.endsWith('.csv') ? readCsv(text) : name.endsWith('.jsonl') ? readJsonl(text) : readText(text);
  if (limit !== undefined) {
    // A limit counts rows, so both captions of a ViSU row stay together.
    set.prompts = set.prompts.filter((p) => p.index < limit);
  }
  return set;
}
