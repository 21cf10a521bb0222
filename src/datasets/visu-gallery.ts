import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { readVisuPrompts, type PromptError } from './prompts.js';

/** One ViSU row of a retrieval gallery: a safe caption and its picture, the unsafe twin and its picture. */
export interface GalleryRow {
  /** Position among the file's usable rows (as `safe-sd eval` counts rows for --skip/--limit). */
  index: number;
  line: number;
  id: string;
  safe: string;
  unsafe: string;
  /** Absolute paths. */
  safeImage: string;
  unsafeImage: string;
}

/**
 * The rows of a ViSU JSONL file with both pictures, paths relative to the file's folder. `skip` and `limit` count
 * rows as `safe-sd eval` does, so "rows 0-95" are the same captions in both reports; a row without both pictures
 * is reported as a problem and left out.
 */
export function readGallery(file: string, limit?: number, skip = 0): { rows: GalleryRow[]; problems: PromptError[] } {
  if (!Number.isSafeInteger(skip) || skip < 0) throw new Error(`--skip expects a row count of 0 or more, got ${skip}`);
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1))
    throw new Error(`--limit expects a row count of 1 or more, got ${limit}`);
  let set: ReturnType<typeof readVisuPrompts>;
  try {
    set = readVisuPrompts(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(code ? `${file}: cannot read the gallery file (${code})` : (e as Error).message);
  }
  const problems = [...set.errors];
  const byLine = new Map<number, { safe?: (typeof set.prompts)[number]; unsafe?: (typeof set.prompts)[number] }>();
  for (const p of set.prompts) byLine.set(p.line, { ...byLine.get(p.line), [p.kind!]: p });
  const rows: GalleryRow[] = [];
  let index = 0;
  for (const [line, { safe, unsafe }] of byLine) {
    const i = index++;
    if (i < skip) continue;
    if (limit !== undefined && i >= skip + limit) break;
    const missing = [
      ['safe_image', safe?.image],
      ['nsfw_image', unsafe?.image],
    ].filter(([, v]) => !v);
    if (missing.length) {
      problems.push({ line, message: `no ${missing.map(([k]) => k).join(' and ')}` });
      continue;
    }
    const at = (p: string) => (isAbsolute(p) ? p : resolve(dirname(file), p));
    const [safeImage, unsafeImage] = [at(safe!.image!), at(unsafe!.image!)];
    const absent = [safeImage, unsafeImage].filter((p) => !existsSync(p));
    if (absent.length) {
      problems.push({ line, message: `no such picture: ${absent.join(', ')}` });
      continue;
    }
    rows.push({
      index: i,
      line,
      id: safe!.id ?? `line-${line}`,
      safe: safe!.text,
      unsafe: unsafe!.text,
      safeImage,
      unsafeImage,
    });
  }
  return { rows, problems };
}
