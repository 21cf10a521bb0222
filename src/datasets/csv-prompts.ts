import { parse } from 'csv-parse/sync';
import { readUtf8 } from '../core/text-file.js';
import type { PromptError, PromptItem, PromptLayout, PromptSet } from './prompt-item.js';
import { InputError } from '../core/errors.js';

/** Columns named by the user, for a CSV whose layout is none of the known ones (or to override them). */
export interface CsvColumns {
  prompt?: string;
  seed?: string;
  guidance?: string;
}

/**
 * The layouts prompt sets are published in, first match wins. Column names as in the released files:
 * - MMA-Diffusion (NSFW adversarial prompts benchmark): target_prompt, adv_prompt, sanitized_adv_prompt,
 *   success_against_sanitization_defense, clean_prompt; the prompt replayed is adv_prompt, without a seed.
 * - safe-sd attack: prompt, target, seed, and a category.
 * - Ring-A-Bell (data/InvPrompt/*.csv): prompt, case_number, evaluation_seed; copies of its nudity set name the
 *   prompt column `sensitive prompt`.
 * - I2P (prompt, categories, hard, ..., sd_seed, sd_guidance_scale, sd_image_width, sd_image_height), ESD's copy
 *   (evaluation_seed, evaluation_guidance, case_number, an unnamed index column first), and the UnlearnDiffAtk
 *   (prompts/nudity.csv, index column `Unnamed: 0`) and P4D (data/unsafe-prompts-nudity_*.csv) sets, which keep the
 *   ESD copy's columns. Their rows are plain unsafe prompts unless the file holds an attack's output: say so with
 *   the attack-set option of `safe-sd eval`.
 */
const LAYOUTS: Array<{
  name: PromptLayout['name'];
  attack: boolean;
  test: (h: string[]) => boolean;
  prompt: string[];
}> = [
  { name: 'mma-diffusion', attack: true, test: (h) => h.includes('adv_prompt'), prompt: ['adv_prompt'] },
  {
    name: 'safe-sd-attack',
    attack: true,
    test: (h) => h.includes('prompt') && h.includes('target'),
    prompt: ['prompt'],
  },
  {
    name: 'ring-a-bell',
    attack: true,
    test: (h) => h.includes('sensitive prompt') || sameSet(h, ['prompt', 'case_number', 'evaluation_seed']),
    prompt: ['sensitive prompt', 'prompt'],
  },
  { name: 'i2p', attack: false, test: (h) => h.includes('prompt') && h.includes('categories'), prompt: ['prompt'] },
  { name: 'csv', attack: false, test: () => true, prompt: ['prompt'] },
];

/** The first of these column names present in the header: the layouts above name them differently. */
const COLUMNS = {
  seed: ['sd_seed', 'evaluation_seed', 'seed'],
  guidance: ['sd_guidance_scale', 'evaluation_guidance', 'guidance_scale', 'guidance'],
  width: ['sd_image_width'],
  height: ['sd_image_height'],
  id: ['image_id', 'case_number'],
  categories: ['categories', 'category'],
  target: ['target_prompt', 'target'],
} as const;

function sameSet(a: string[], b: string[]): boolean {
  return a.length === b.length && b.every((x) => a.includes(x));
}

const DOUBLED = '(a quote inside a quoted field is written "")';

interface Row {
  record: string[];
  /** First and last line of the row in the file (a quoted field may span lines). */
  first: number;
  last: number;
}

/**
 * Records with the lines they span. A quote inside an unquoted field is text (published attack prompts have them);
 * a field that opens a quote and never closes it, or closes it only rows later, is refused with the line where it
 * opened: read leniently, it would swallow every later row into one prompt.
 */
function csvRows(path: string): Row[] {
  let lastEnd = 0;
  let parsed: Array<{ record: string[]; info: { lines: number }; raw: string }>;
  try {
    parsed = parse(readUtf8(path), {
      relax_quotes: true,
      relax_column_count: true,
      skip_empty_lines: true,
      info: true,
      raw: true,
      on_record: (record, context) => {
        lastEnd = context.lines;
        return record;
      },
    }) as unknown as typeof parsed;
  } catch (e) {
    const err = e as Error & { code?: string; lines?: number };
    if (err.code === 'CSV_QUOTE_NOT_CLOSED') {
      throw new InputError(`${path}: line ${lastEnd + 1}: a quote opens a field and is never closed ${DOUBLED}`);
    }
    throw new InputError(`${path}: line ${err.lines ?? lastEnd + 1}: unreadable CSV (${err.message})`);
  }
  return parsed.map(({ record, info, raw }) => {
    const breaks = raw.replace(/\r?\n$/, '').split('\n').length - 1;
    const row = { record, first: info.lines - breaks, last: info.lines };
    if (breaks > 0) {
      try {
        parse(raw, { relax_column_count: true });
      } catch (e) {
        // A quote inside an unquoted field (allowed above) fails the strict parse too; only a bad close is a swallow.
        if ((e as { code?: string }).code !== 'CSV_INVALID_CLOSING_QUOTE') return row;
        throw new InputError(
          `${path}: line ${row.first}: a quote opened here closes only on line ${row.last}, ` +
            `swallowing the rows between ${DOUBLED}`,
        );
      }
    }
    return row;
  });
}

/** The column named by the user (which must exist), else the first of the layout's candidates present. */
function column(
  path: string,
  header: string[],
  named: string | undefined,
  candidates: readonly string[],
  what: string,
): number {
  if (named !== undefined) {
    const i = header.indexOf(named);
    if (i < 0) throw new InputError(`${path}: no ${what} column '${named}' (columns: ${header.join(', ')})`);
    return i;
  }
  return candidates.map((n) => header.indexOf(n)).find((i) => i >= 0) ?? -1;
}

/**
 * A CSV prompt set in any of the layouts above: categories as one comma-separated field, per-prompt seed, guidance
 * and size where the layout has them. Rows that cannot be used are reported by line and left out.
 */
export function readCsvPrompts(path: string, named: CsvColumns = {}): PromptSet {
  const rows = csvRows(path);
  if (rows.length === 0) throw new InputError(`${path}: empty CSV, expected a header with a prompt column`);
  const header = rows[0].record.map((h) => h.trim());
  const layout = LAYOUTS.find((l) => l.test(header))!;
  const promptCol = column(path, header, named.prompt, layout.prompt, 'prompt');
  if (promptCol < 0)
    throw new InputError(`${path}: header has no prompt column (columns: ${header.join(', ')}); name one`);
  const idx = {
    seed: column(path, header, named.seed, COLUMNS.seed, 'seed'),
    guidance: column(path, header, named.guidance, COLUMNS.guidance, 'guidance'),
    width: column(path, header, undefined, COLUMNS.width, 'width'),
    height: column(path, header, undefined, COLUMNS.height, 'height'),
    id: column(path, header, undefined, COLUMNS.id, 'id'),
    categories: column(path, header, undefined, COLUMNS.categories, 'categories'),
    target: column(path, header, undefined, COLUMNS.target, 'target'),
    hard: header.indexOf('hard'),
  };
  const prompts: PromptItem[] = [];
  const errors: PromptError[] = [];
  for (const { record, first: line } of rows.slice(1)) {
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
    const field = (i: number) => (i >= 0 && record[i].trim() !== '' ? record[i] : undefined);
    try {
      if (idx.categories >= 0)
        item.categories = record[idx.categories]
          .split(',')
          .map((c) => c.trim())
          .filter(Boolean);
      if (field(idx.hard) !== undefined) item.hard = integer(record[idx.hard], 'hard') === 1;
      if (field(idx.id) !== undefined) item.id = record[idx.id].trim();
      if (field(idx.target) !== undefined) item.target = record[idx.target].trim();
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
  const name = (i: number) => (i >= 0 ? header[i] : undefined);
  const columns = { prompt: header[promptCol], seed: name(idx.seed), guidance: name(idx.guidance) };
  return { prompts, errors, layout: { name: layout.name, attack: layout.attack, columns } };
}

function number(field: string, column: string): number {
  const v = Number(field.trim());
  if (field.trim() === '' || !Number.isFinite(v)) throw new Error(`${column} ${JSON.stringify(field)} is not a number`);
  return v;
}

function integer(field: string, column: string): number {
  const v = number(field, column);
  if (!Number.isSafeInteger(v) || v < 0)
    throw new Error(`${column} ${JSON.stringify(field)} is not a non-negative integer`);
  return v;
}
