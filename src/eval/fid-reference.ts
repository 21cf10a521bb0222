/**
 * Reference statistics for FID: a stats file (safetensors `mu` F64 [D], `sigma` F64 [D, D], as `safe-sd fid`
 * writes them), or a folder of images whose features are computed once and cached in the run folder, keyed by the
 * feature extractor and the files' names, sizes and modification times.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { extname, join, relative, resolve } from 'node:path';
import { SafetensorsFile } from '../core/safetensors.js';
import { featureStats, loadStats, saveStats, type FeatureStats } from './fid.js';
import type { FeatureExtractor } from './fid-features.js';

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff']);

function listImages(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase())) out.push(p);
    }
  };
  walk(dir);
  return out;
}

export interface Reference {
  stats: FeatureStats;
  source: string;
  /** Pictures the statistics were computed from (absent for a stats file without that metadata). */
  images?: number;
  cached?: string;
}

export async function referenceStats(
  source: string,
  features: FeatureExtractor,
  cacheDir: string,
  onWarning: (m: string) => void,
): Promise<Reference> {
  const abs = resolve(source);
  if (!existsSync(abs)) throw new Error(`--fid-ref ${source}: no such file or folder`);
  if (!statSync(abs).isDirectory()) {
    const stats = loadStats(abs);
    const f = SafetensorsFile.open(abs);
    const meta = f.metadata;
    f.close();
    return { stats, source: abs, images: meta?.images ? Number(meta.images) : undefined };
  }
  const files = listImages(abs);
  const hash = createHash('sha256').update(features.id);
  for (const f of files) {
    const st = statSync(f);
    hash.update(`\0${relative(abs, f)}\0${st.size}\0${st.mtimeMs}`);
  }
  const key = hash.digest('hex').slice(0, 16);
  const cached = join(cacheDir, `fid-ref-${key}.safetensors`);
  if (existsSync(cached)) {
    const f = SafetensorsFile.open(cached);
    const meta = f.metadata;
    f.close();
    return { stats: loadStats(cached), source: abs, images: Number(meta?.images), cached };
  }
  const vectors: Float32Array[] = [];
  for (let i = 0; i < files.length; i += 64) {
    const chunk = files.slice(i, i + 64);
    try {
      vectors.push(...(await features.features(chunk)));
    } catch {
      // One bad file fails its chunk: redo it one by one so only that file is left out.
      for (const f of chunk) {
        try {
          vectors.push(...(await features.features([f])));
        } catch (e) {
          onWarning(`--fid-ref: ${f}: left out (${(e as Error).message.split('\n')[0]})`);
        }
      }
    }
  }
  if (vectors.length < 2)
    throw new Error(`--fid-ref ${source}: ${vectors.length} readable images; FID needs at least 2`);
  const d = vectors[0].length;
  const flat = new Float32Array(vectors.length * d);
  vectors.forEach((v, k) => {
    flat.set(v, k * d);
  });
  const stats = await featureStats(flat, vectors.length, d);
  saveStats(cached, stats, { source: abs, features: features.id, images: String(vectors.length) });
  return { stats, source: abs, images: vectors.length, cached };
}
