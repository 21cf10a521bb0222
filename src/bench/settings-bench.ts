import type * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { loadUnetGraph } from '../models/unet.js';
import { f32 } from '../core/tensor.js';
import { serializeModel } from '../onnx/serialize.js';
import { createSession, run, type SessionSettings } from '../onnx/session.js';
import { median, times, type BenchRow } from './measure.js';

/** The variants of the session settings the issue asks to choose by measurement. */
const VARIANTS: Array<[string, SessionSettings]> = [
  ["default ('all', arena, threads = cores)", {}],
  ["optimisation 'extended'", { graphOptimizationLevel: 'extended' }],
  ["optimisation 'basic'", { graphOptimizationLevel: 'basic' }],
  ['memory arena off', { enableCpuMemArena: false }],
  ['1 intra-op thread', { intraOpThreads: 1 }],
  ['intra-op spinning off', { spinning: false }],
];

/**
 * Section 'settings': the toy UNet's call time at UNet batch 2 and 8 (one and four guided images) under each session
 * variant; the SD 1.5 half of the question (open time and step time at 'extended') is `--compare-levels` in b.
 */
export async function settingsSection(toyDir: string): Promise<BenchRow[]> {
  const model = serializeModel(loadUnetGraph(join(toyDir, 'unet')));
  const rows: BenchRow[] = [];
  for (const [label, settings] of VARIANTS) {
    const t0 = performance.now();
    const session: ort.InferenceSession = await createSession(model, settings);
    const openMs = performance.now() - t0;
    const ms: number[] = [];
    for (const batch of [2, 8]) {
      const feeds = {
        sample: f32(
          Float32Array.from({ length: batch * 4 * 64 }, (_, i) => Math.sin(i)),
          [batch, 4, 8, 8],
        ),
        timestep: f32(new Float32Array(batch).fill(500), [batch]),
        encoder_hidden_states: f32(
          Float32Array.from({ length: batch * 77 * 64 }, (_, i) => Math.cos(i)),
          [batch, 77, 64],
        ),
      };
      ms.push(median(await times(() => run(session, feeds), 15, 3)));
    }
    await session.release();
    rows.push({
      section: 'settings',
      name: `toy UNet batch 2 / batch 8, ${label}`,
      value: ms[0],
      unit: 'ms',
      note:
        `batch 8: ${ms[1].toFixed(1)} ms (${((4 * ms[0]) / ms[1]).toFixed(2)}x per image); open ` +
        `${openMs.toFixed(0)} ms`,
    });
  }
  return rows;
}
