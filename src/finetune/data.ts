import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { clipPreprocess } from '../models/clip-preprocess.js';
import { SafetensorsFile } from '../core/safetensors.js';
import type { F32Tensor } from '../core/tensor.js';
import { InputError } from '../core/errors.js';
import { readVisuRecords } from '../datasets/visu.js';

/**
 * ViSU-style training data: JSONL rows `{id, safe, nsfw, tag, safe_image, nsfw_image}`, each a safe caption, the same
 * caption made unsafe, and a picture for each; image paths are relative to the JSONL file. Bad rows are found
 * before training starts, so a run never stops half-way on bad data.
 */

export interface VisuRow {
  /** 1-based line in the JSONL file, for messages. */
  line: number;
  id: string;
  safe: string;
  nsfw: string;
  tag: string;
  /** Absolute paths. */
  safeImage: string;
  nsfwImage: string;
}

export interface DataProblem {
  file: string;
  line: number;
  message: string;
}

export interface VisuData {
  file: string;
  rows: VisuRow[];
  /** Rows left out, with why. */
  problems: DataProblem[];
}

export class DataError extends InputError {
  override name = 'DataError';
}

export function formatProblem(p: DataProblem): string {
  return `${p.file}:${p.line}: ${p.message}`;
}

/** `--data` may name a JSONL file or a folder holding `train.jsonl`. */
export function resolveDataFile(path: string): string {
  if (!existsSync(path)) throw new DataError(`${path}: no such file or folder`);
  if (statSync(path).isDirectory()) {
    const file = join(path, 'train.jsonl');
    if (!existsSync(file)) throw new DataError(`${path}: a data folder must hold train.jsonl`);
    return file;
  }
  return path;
}

export interface ReadOptions {
  /** Refuse the whole file on the first bad row instead of leaving the row out. */
  strict?: boolean;
  /** Check that the image files exist (off when image embeddings come precomputed). */
  checkImages?: boolean;
}

/**
 * Parse and check every row (datasets/visu.ts reads the lines; training also needs a unique id and both pictures);
 * bad ones are reported by line and left out, or fatal when `strict`.
 */
export function readVisu(path: string, opts: ReadOptions = {}): VisuData {
  const file = resolve(resolveDataFile(path));
  const base = dirname(file);
  const checkImages = opts.checkImages ?? true;
  const { records, errors } = readVisuRecords(file);
  const rows: VisuRow[] = [];
  const problems: DataProblem[] = errors.map((e) => ({ file, ...e }));
  const ids = new Set<string>();
  for (const r of records) {
    const required = { id: r.id, safe_image: r.safeImage, nsfw_image: r.nsfwImage };
    const missing = Object.entries(required).filter(([, v]) => v === undefined || !v.trim());
    let message: string | undefined;
    if (missing.length) message = `missing or empty ${missing.map(([k]) => k).join(' and ')}`;
    else if (ids.has(r.id!)) message = `id '${r.id}' appears twice`;
    const row: VisuRow = {
      line: r.line,
      id: r.id!,
      safe: r.safe,
      nsfw: r.nsfw,
      tag: r.tag ?? '',
      safeImage: resolve(base, r.safeImage ?? ''),
      nsfwImage: resolve(base, r.nsfwImage ?? ''),
    };
    if (!message && checkImages) {
      const absent = [row.safeImage, row.nsfwImage].find((img) => !existsSync(img));
      if (absent) message = `missing image ${absent}`;
    }
    if (message) problems.push({ file, line: r.line, message });
    else {
      ids.add(row.id);
      rows.push(row);
    }
  }
  problems.sort((a, b) => a.line - b.line);
  if (opts.strict && problems.length) throw new DataError(formatProblem(problems[0]!));
  if (!rows.length) {
    const bad = problems.length ? ` (${problems.length} bad, first: ${formatProblem(problems[0])})` : '';
    throw new DataError(`${file}: no usable rows${bad}`);
  }
  return { file, rows, problems };
}

/** Leave out rows whose images turned out unreadable; fatal when `strict`. */
export function dropRows(data: VisuData, bad: Map<number, string>, strict = false): VisuData {
  if (!bad.size) return data;
  const problems = [...bad].map(([line, message]) => ({ file: data.file, line, message }));
  if (strict) throw new DataError(formatProblem(problems[0]));
  const rows = data.rows.filter((r) => !bad.has(r.line));
  if (!rows.length) throw new DataError(`${data.file}: no usable rows (first: ${formatProblem(problems[0])})`);
  return { ...data, rows, problems: [...data.problems, ...problems].sort((a, b) => a.line - b.line) };
}

/** Pixel values of every row's pictures ([3, size, size] each), decoding failures reported per row line. */
export async function loadPixels(
  rows: VisuRow[],
  size: number,
  which: Array<'safe' | 'nsfw'>,
): Promise<{ pixels: Map<string, F32Tensor>; bad: Map<number, string> }> {
  const pixels = new Map<string, F32Tensor>();
  const bad = new Map<number, string>();
  for (const row of rows) {
    try {
      for (const w of which)
        pixels.set(`${row.id}.${w}`, await clipPreprocess(w === 'safe' ? row.safeImage : row.nsfwImage, size));
    } catch (e) {
      bad.set(row.line, (e as Error).message);
    }
  }
  return { pixels, bad };
}

/**
 * Precomputed image embeddings: a safetensors file with `<id>.safe` and `<id>.nsfw` vectors [projection_dim]
 * (the reference vision tower's image_embeds). Rows without their vectors are reported.
 */
export function readImageEmbeds(
  path: string,
  rows: VisuRow[],
  dim: number,
  which: Array<'safe' | 'nsfw'>,
): { embeds: Map<string, F32Tensor>; bad: Map<number, string> } {
  const file = SafetensorsFile.open(path);
  const embeds = new Map<string, F32Tensor>();
  const bad = new Map<number, string>();
  try {
    for (const row of rows) {
      for (const w of which) {
        const key = `${row.id}.${w}`;
        if (!file.has(key)) {
          bad.set(row.line, `${path}: no image embedding ${key}`);
          continue;
        }
        const t = file.readF32(key);
        if (t.data.length !== dim) {
          bad.set(row.line, `${path}: image embedding ${key} has shape [${t.shape}], expected [${dim}]`);
          continue;
        }
        embeds.set(key, { dtype: 'F32', shape: [dim], data: t.data });
      }
    }
  } finally {
    file.close();
  }
  return { embeds, bad };
}
