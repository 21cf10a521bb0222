import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertToFloat16 } from '../onnx/fp16.js';
import { saveModel } from '../onnx/serialize.js';
import type { SessionSettings } from '../onnx/session.js';
import { countFlops } from './flops.js';
import { runChild, type BenchRow } from './measure.js';
import { sd15UnetGraph } from './sd15.js';

interface ChildReport {
  openMs: number;
  rssBeforeBytes: number;
  results: Array<{
    size: number;
    batch: number;
    stepMs: number;
    firstMs: number;
    overhead: number;
    maxRssBytes: number;
  }>;
}

export interface Sd15Options {
  /** FLOP/s of section a. */
  peak: number;
  /** Timed denoising steps per configuration (after one warm-up call). */
  steps: number;
  /** Also open at 'extended' and time 512 px batch 1 there (costs another 3.4 GB open). */
  compareLevels: boolean;
  settings: SessionSettings;
  /** Also build SD 1.5 with every attention plain and with every attention fused, and time 512 px batch 1 of each. */
  compareAttention: boolean;
}

/**
 * Sections b, c (SD 1.5 shapes) and e: SD 1.5's UNet from random weights, saved once with external data, then run
 * in child processes so that each peak-memory figure is its own.
 */
export async function sd15Section(o: Sd15Options): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-bench-'));
  try {
    const path = join(dir, 'unet.onnx');
    const flops = new Map<string, number>();
    const configs = ['64:1', '64:2', '32:1', '32:2'];
    {
      const g = sd15UnetGraph();
      for (const c of configs) {
        const [size, batch] = c.split(':').map(Number);
        flops.set(
          c,
          countFlops(g, { sample: [batch, 4, size, size], timestep: [batch], encoder_hidden_states: [batch, 77, 768] })
            .total,
        );
      }
      saveModel(o.settings.float16 ? convertToFloat16(g) : g, path, { externalData: true });
    }
    const weightBytes = statSync(`${path}.data`).size;
    const rows: BenchRow[] = [];
    const settings = (level: string, extra: object = {}) =>
      JSON.stringify({ ...o.settings, graphOptimizationLevel: level, ...extra });
    // The first open optimises and saves the optimised copy; the measured process then opens that copy, as every
    // later start does, so its memory peak is the session's alone.
    const first = await runChild<ChildReport>('sd15-unet.ts', [path, settings('all'), '0']);
    const all = await runChild<ChildReport>('sd15-unet.ts', [path, settings('all'), String(o.steps), ...configs]);
    rows.push({
      section: 'b SD 1.5 UNet',
      name: "session open, first time ('all', optimised copy saved)",
      value: first.openMs / 1000,
      unit: 's',
    });
    rows.push({
      section: 'b SD 1.5 UNet',
      name: 'session open from the saved optimised copy',
      value: all.openMs / 1000,
      unit: 's',
    });
    for (const r of all.results) {
      const c = `${r.size}:${r.batch}`;
      const px = r.size * 8;
      const util = flops.get(c)! / (r.stepMs / 1000) / o.peak;
      rows.push({
        section: 'b SD 1.5 UNet',
        name: `${px}x${px} batch ${r.batch}: time per step`,
        value: r.stepMs / 1000,
        unit: 's',
        note: `${(flops.get(c)! / 1e9).toFixed(0)} GFLOP; first call ${(r.firstMs / 1000).toFixed(1)} s`,
      });
      rows.push({
        section: 'b SD 1.5 UNet',
        name: `${px}x${px} batch ${r.batch}: FLOP utilisation vs a`,
        value: util,
        unit: 'ratio',
        target: r.size === 64 ? '>= 0.6' : undefined,
      });
      rows.push({
        section: 'c pipeline overhead',
        name: `SD 1.5 UNet denoise ${px}x${px} batch ${r.batch}: wall / sum(run)`,
        value: r.overhead,
        unit: 'ratio',
        target: '<= 1.03',
        note: `${o.steps} steps`,
      });
    }
    const big = all.results[0];
    rows.push({
      section: 'e memory',
      name: 'SD 1.5 UNet peak RSS / weight bytes (open + 512x512 batch 1)',
      value: big.maxRssBytes / weightBytes,
      unit: 'ratio',
      target: '<= 1.3',
      note:
        `peak ${(big.maxRssBytes / 2 ** 30).toFixed(2)} GiB, weights ${(weightBytes / 2 ** 30).toFixed(2)} ` +
        `GiB, process before open ${(all.rssBeforeBytes / 2 ** 20).toFixed(0)} MiB`,
    });
    if (o.compareLevels) {
      const ext = await runChild<ChildReport>('sd15-unet.ts', [
        path,
        settings('extended', { reuseOptimized: false }),
        String(o.steps),
        '64:1',
      ]);
      const r = ext.results[0];
      rows.push({
        section: 'b SD 1.5 UNet',
        name: "session open, optimisation 'extended', no saved copy",
        value: ext.openMs / 1000,
        unit: 's',
      });
      rows.push({
        section: 'b SD 1.5 UNet',
        name: "512x512 batch 1 at 'extended': time per step",
        value: r.stepMs / 1000,
        unit: 's',
      });
      rows.push({
        section: 'e memory',
        name: "SD 1.5 UNet peak RSS / weight bytes at 'extended'",
        value: r.maxRssBytes / weightBytes,
        unit: 'ratio',
        target: '<= 1.3',
      });
    }
    if (o.compareAttention) {
      for (const kernel of ['plain', 'fused'] as const) {
        const variant = join(dir, kernel, 'unet.onnx');
        saveModel(sd15UnetGraph(kernel), variant, { externalData: true });
        const r = (
          await runChild<ChildReport>('sd15-unet.ts', [
            variant,
            settings('all', { reuseOptimized: false }),
            String(o.steps),
            '64:1',
          ])
        ).results[0];
        rows.push({
          section: 'b SD 1.5 UNet',
          name:
            `512x512 batch 1, every attention ` +
            `${kernel === 'plain' ? 'MatMul/Softmax' : 'MultiHeadAttention'}: time per step`,
          value: r.stepMs / 1000,
          unit: 's',
        });
        rmSync(join(dir, kernel), { recursive: true, force: true });
      }
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
