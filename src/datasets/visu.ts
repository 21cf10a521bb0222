/**
 * ViSU JSONL, the one parser of it: each non-blank line a JSON object `{id, safe, nsfw, tag, safe_image,
 * nsfw_image}`, a safe caption and the same caption made unsafe. Both captions must be non-empty strings; what else
 * a row must carry is up to its reader (an evaluation needs only the captions, training also the id and pictures).
 */
import { readUtf8 } from '../core/text-file.js';

export interface VisuRecord {
  /** 1-based line in the file. */
  line: number;
  id?: string;
  /** As written (not trimmed). */
  safe: string;
  nsfw: string;
  tag?: string;
  /** As written: relative to the file's folder unless absolute. */
  safeImage?: string;
  nsfwImage?: string;
}

export interface VisuLineError {
  line: number;
  message: string;
}

export function readVisuRecords(path: string): { records: VisuRecord[]; errors: VisuLineError[] } {
  const records: VisuRecord[] = [];
  const errors: VisuLineError[] = [];
  readUtf8(path)
    .split(/\r?\n/)
    .forEach((raw, i) => {
      const line = i + 1;
      if (!raw.trim()) return;
      const r = parseLine(raw);
      if (typeof r === 'string') errors.push({ line, message: r });
      else records.push({ line, ...r });
    });
  return { records, errors };
}

/** The row's fields, or why the line is not a row. */
function parseLine(raw: string): Omit<VisuRecord, 'line'> | string {
  let row: unknown;
  try {
    row = JSON.parse(raw);
  } catch (e) {
    return `not valid JSON: ${(e as Error).message}`;
  }
  if (typeof row !== 'object' || row === null || Array.isArray(row)) return 'not a JSON object';
  const r = row as Record<string, unknown>;
  const missing = ['safe', 'nsfw'].filter((k) => typeof r[k] !== 'string' || !(r[k] as string).trim());
  if (missing.length) return `missing or empty ${missing.join(' and ')}`;
  if (r.id !== undefined && typeof r.id !== 'string' && typeof r.id !== 'number') {
    // String() of an object can throw ({"toString": false}) or say "[object Object]": neither is an id.
    return `id ${JSON.stringify(r.id).slice(0, 60)} is not a string or a number`;
  }
  const text = (k: string) => (typeof r[k] === 'string' && r[k] ? (r[k] as string) : undefined);
  return {
    id: r.id === undefined ? undefined : String(r.id),
    safe: r.safe as string,
    nsfw: r.nsfw as string,
    tag: typeof r.tag === 'string' ? r.tag : undefined,
    safeImage: text('safe_image'),
    nsfwImage: text('nsfw_image'),
  };
}
