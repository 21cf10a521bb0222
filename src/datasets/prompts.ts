import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse } from 'csv-parse/sync';

/** One prompt of an evaluation set, with the sampling settings its benchmark fixes (where it fixes them). */
export interface PromptItem {
  text: string;
  /** 1-based line of the source file the prompt came from. */
  line: number;
  id?: string;
  /** ViSU rows yield a safe and an unsafe prompt. */
  kind?: 'safe' | 'unsafe';
  /** I2P categories (sexual, shocking, harassment, self-harm, violence, illegal activity, hate). */
  categories?: string[];
  hard?: boolean;
  tag?: string;
  /** ViSU: the picture of this caption (`safe_image` / `nsfw_image`), as the file gives it. */
  image?: string;
  seed?: number;
  guidance?: number;
  width?: number;
  height?: number;
}

export interface PromptError {
  line: number;
  message: string;
}

export interface PromptSet {
  prompts: PromptItem[];
  /** Rows that were skipped, with why. */
  errors: PromptError[];
}

/** Pick the reader by extension: .csv (I2P / COCO layout), .jsonl (ViSU), anything else one prompt a line. */
export function readPromptSet(path: string): PromptSet {
  const ext = extname(path).toLowerCase();
  if (ext === '.csv') return readCsvPrompts(path);
  if (ext === '.jsonl') return readVisuPrompts(path);
  return readTextPrompts(path);
}

export function readTextPrompts(path: string): PromptSet {
  const prompts: PromptItem[] = [];
  readFileSync(path, 'utf8')
    .split(/\r?\n/)
    .forEach((raw, i) => {
      const text = raw.trim();
      if (text) prompts.push({ text, line: i + 1 });
    });
  return { prompts, errors: [] };
}

/** ViSU rows `{id, safe, nsfw, tag, ...}`: the safe caption and its unsafe twin. */
export function readVisuPrompts(path: string): PromptSet {
  const prompts: PromptItem[] = [];
  const errors: PromptError[] = [];
  readFileSync(path, 'utf8')
    .split(/\r?\n/)
    .forEach((raw, i) => {
      const line = i + 1;
      if (!raw.trim()) return;
      let row: unknown;
      try {
        row = JSON.parse(raw);
      } catch (e) {
        errors.push({ line, message: `not valid JSON: ${(e as Error).message}` });
        return;
      }
      if (typeof row !== 'object' || row === null || Array.isArray(row)) {
        errors.push({ line, message: 'not a JSON object' });
        return;
      }
      const r = row as Record<string, unknown>;
      const missing = ['safe', 'nsfw'].filter((k) => typeof r[k] !== 'string' || !(r[k] as string).trim());
      if (missing.length) {
        errors.push({ line, message: `missing or empty ${missing.join(' and ')}` });
        return;
      }
      const id = r.id === undefined ? undefined : String(r.id);
      const tag = typeof r.tag === 'string' ? r.tag : undefined;
      const image = (k: string) => (typeof r[k] === 'string' && r[k] ? (r[k] as string) : undefined);
      prompts.push({ text: (r.safe as string).trim(), line, id, tag, kind: 'safe', image: image('safe_image') });
      prompts.push({ text: (r.nsfw as string).trim(), line, id, tag, kind: 'unsafe', image: image('nsfw_image') });
    });
  return { prompts, errors };
}

/** The first of these column names present in the header: I2P's original file and ESD's copy name them differently. */
const COLUMNS = {
  seed: ['sd_seed', 'evaluation_seed'],
  guidance: ['sd_guidance_scale', 'evaluation_guidance'],
  width: ['sd_image_width'],
  height: ['sd_image_height'],
  id: ['image_id', 'case_number'],
} as const;

/**
 * I2P (and COCO-30k) CSVs: a header with a `prompt` column, optionally an unnamed leading index column, categories
 * as one comma-separated field, and per-prompt seed, guidance and size.
 */
export function readCsvPrompts(path: string): PromptSet {
  const prompts: PromptItem[] = [];
  const errors: PromptError[] = [];
  const rows = parse(readFileSync(path, 'utf8'), {
    bom: true,
    relax_column_count: true,
    skip_empty_lines: true,
    skip_records_with_error: true,
    info: true,
    on_skip: (err) => {
      errors.push({ line: (err as { lines?: number } | undefined)?.lines ?? 0, message: `unreadable CSV: ${err?.message ?? 'malformed row'}` });
      return undefined;
    },
  }) as unknown as { record: string[]; info: { lines: number } }[];
  if (rows.length === 0) throw new Error(`${path}: empty CSV, expected a header with a prompt column`);
  const header = rows[0].record.map((h) => h.trim());
  const col = (names: readonly string[]) => names.map((n) => header.indexOf(n)).find((i) => i >= 0) ?? -1;
  const promptCol = header.indexOf('prompt');
  if (promptCol < 0) throw new Error(`${path}: header has no prompt column (columns: ${header.join(', ')})`);
  const cat = header.indexOf('categories');
  const hard = header.indexOf('hard');
  const idx = { seed: col(COLUMNS.seed), guidance: col(COLUMNS.guidance), width: col(COLUMNS.width), height: col(COLUMNS.height), id: col(COLUMNS.id) };
  for (const { record, info } of rows.slice(1)) {
    const line = info.lines;
    if (record.length !== header.length) {
      errors.push({ line, message: `${record.length} fields, the header has ${header.length}` });
      continue;
    }
    const text = record[promptCol].trim();
    if (!text) {
      errors.push({ line, message: 'empty prompt' });
      continue;
    }
    const item: PromptItem = { text, line };
    try {
      if (cat >= 0) item.categories = record[cat].split(',').map((c) => c.trim()).filter(Boolean);
      if (hard >= 0 && record[hard].trim() !== '') item.hard = integer(record[hard], 'hard') === 1;
      if (idx.id >= 0) item.id = record[idx.id].trim();
      if (idx.seed >= 0) item.seed = integer(record[idx.seed], header[idx.seed]);
      if (idx.guidance >= 0) item.guidance = number(record[idx.guidance], header[idx.guidance]);
      if (idx.width >= 0) item.width = integer(record[idx.width], header[idx.width]);
      if (idx.height >= 0) item.height = integer(record[idx.height], header[idx.height]);
    } catch (e) {
      errors.push({ line, message: (e as Error).message });
      continue;
    }
    prompts.push(item);
  }
  return { prompts, errors };
}

function number(field: string, column: string): number {
  const v = Number(field.trim());
  if (field.trim() === '' || !Number.isFinite(v)) throw new Error(`${column} ${JSON.stringify(field)} is not a number`);
  return v;
}

function integer(field: string, column: string): number {
  const v = number(field, column);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${column} ${JSON.stringify(field)} is not a non-negative integer`);
  return v;
}
