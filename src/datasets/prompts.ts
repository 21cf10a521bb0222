import { extname } from 'node:path';
import { readCsvPrompts, type CsvColumns } from './csv-prompts.js';
import { readUtf8 } from '../core/text-file.js';
import type { PromptItem, PromptSet } from './prompt-item.js';
import { readVisuRecords } from './visu.js';
import { InputError } from '../core/errors.js';

export type { CsvColumns } from './csv-prompts.js';
export type { PromptError, PromptItem, PromptLayout, PromptSet } from './prompt-item.js';

/**
 * Pick the reader by extension: .csv (I2P, COCO, Ring-A-Bell, UnlearnDiffAtk, P4D, MMA-Diffusion and safe-sd attack
 * layouts; `columns` names the prompt, seed and guidance columns of any other), .jsonl (ViSU), anything else one
 * prompt a line.
 */
export function readPromptSet(path: string, columns: CsvColumns = {}): PromptSet {
  const ext = extname(path).toLowerCase();
  if (ext === '.csv') return readCsvPrompts(path, columns);
  if (Object.values(columns).some((c) => c !== undefined)) {
    throw new InputError(`${path}: column names apply to CSV files only`);
  }
  if (ext === '.jsonl') return readVisuPrompts(path);
  return readTextPrompts(path);
}

export function readTextPrompts(path: string): PromptSet {
  const prompts: PromptItem[] = [];
  readUtf8(path)
    .split(/\r?\n/)
    .forEach((raw, i) => {
      const text = raw.trim();
      if (text) prompts.push({ text, line: i + 1 });
    });
  return { prompts, errors: [], layout: { name: 'text', attack: false } };
}

/** ViSU rows `{id, safe, nsfw, tag, ...}`: the safe caption and its unsafe twin. */
export function readVisuPrompts(path: string): PromptSet {
  const { records, errors } = readVisuRecords(path);
  const prompts: PromptItem[] = records.flatMap(({ line, id, tag, safe, nsfw, safeImage, nsfwImage }) => [
    { text: safe.trim(), line, id, tag, kind: 'safe' as const, image: safeImage },
    { text: nsfw.trim(), line, id, tag, kind: 'unsafe' as const, image: nsfwImage },
  ]);
  return { prompts, errors, layout: { name: 'visu', attack: false } };
}
