import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomTensor } from './reference.js';
import type { BenchRow } from './measure.js';

/** Modules other parts of the project provide; each slot is measured only when its module is present. */
const here = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));

type BenchFn = () => Promise<unknown> | unknown;

/**
 * Section g: the fine-tuning module's own benchmark (training step over forward pass), when src/finetune/bench.ts
 * exists and exports a function (`finetuneBench`, `bench` or default) returning a number or rows.
 */
export async function finetuneSection(): Promise<BenchRow[]> {
  const name = 'training step / forward pass';
  if (!existsSync(here('../finetune/bench.ts'))) {
    return [{ section: 'g fine-tuning', name, unit: 'ratio', note: 'not measured: fine-tuning module absent' }];
  }
  // A variable specifier: the module may be absent when this file is type-checked.
  const spec = '../finetune/bench.js';
  const mod = (await import(spec)) as Record<string, unknown>;
  const fn = [mod.finetuneBench, mod.bench, mod.default].find((f): f is BenchFn => typeof f === 'function');
  if (!fn) return [{ section: 'g fine-tuning', name, unit: 'ratio', note: 'not measured: src/finetune/bench.ts exports no benchmark function' }];
  const out = await fn();
  if (typeof out === 'number') return [{ section: 'g fine-tuning', name, value: out, unit: 'ratio' }];
  if (Array.isArray(out)) return out as BenchRow[];
  return [{ section: 'g fine-tuning', name, unit: 'ratio', note: JSON.stringify(out) }];
}

interface FidModule {
  featureStats(features: Float32Array, n: number, d: number): Promise<unknown>;
  frechetDistance(a: unknown, b: unknown): Promise<number>;
}

/** Section h: FID statistics of two 10,000 x 2,048 feature sets and the distance between them. */
export async function fidSection(): Promise<BenchRow[]> {
  const section = 'h FID';
  if (!existsSync(here('../eval/fid.ts'))) {
    return [{ section, name: 'featureStats + frechetDistance, 10,000 x 2,048', unit: 's', note: 'not measured: src/eval/fid.ts absent' }];
  }
  const spec = '../eval/fid.js';
  const fid = (await import(spec)) as FidModule;
  const n = 10_000;
  const d = 2048;
  const a = randomTensor([n, d], 11).data;
  const b = randomTensor([n, d], 12).data;
  let t = performance.now();
  const sa = await fid.featureStats(a, n, d);
  const statsMs = performance.now() - t;
  const sb = await fid.featureStats(b, n, d);
  t = performance.now();
  const distance = await fid.frechetDistance(sa, sb);
  const distanceMs = performance.now() - t;
  return [
    { section, name: 'featureStats, 10,000 x 2,048', value: statsMs / 1000, unit: 's' },
    { section, name: 'frechetDistance, 2,048-d', value: distanceMs / 1000, unit: 's', note: `FID of two uniform samples: ${distance.toFixed(3)}` },
  ];
}
