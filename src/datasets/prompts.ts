import { extname } from 'node:path';
import { readCsvPrompts, type CsvColumns } from './csv-prompts.js';
import { readUtf8 } from '../core/text-file.js';
import type { PromptError, PromptItem, PromptSet } from './prompt-item.js';
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
  const prompts: PromptItem[] = [];
  const errors: PromptError[] = [];
  readUtf8(path)
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
      if (r.id !== undefined && typeof r.id !== 'string' && typeof r.id !== 'number') {
        // String() of an object can throw ({"toString": false}) or say "[object Object]": neither is an id.
        errors.push({ line, message: `id ${JSON.stringify(r.id).slice(0, 60)} is not a string or a number` });
        return;
      }
      const id = r.id === undefined ? undefined : String(r.id);
      const tag = typeof r.tag === 'string' ? r.tag : undefined;
      const image = (k: string) => (typeof r[k] === 'string' && r[k] ? (r[k] as string) : undefined);
      prompts.push({ text: (r.safe as string).trim(), line, id, tag, kind: 'safe', image: image('safe_image') });
      prompts.push({ text: (r.nsfw as string).trim(), line, id, tag, kind: 'unsafe', image: image('nsfw_image') });
    });
  return { prompts, errors, layout: { name: 'visu', attack: false } };
}
