import { loadClip } from '../models/clip-loader.js';
import { stepToForwardRatio } from '../finetune/step-timing.js';
import { buildTrainGraph } from '../finetune/train-graph.js';
import { Tokenizer } from '../pipeline/tokenizer.js';
import { fileURLToPath } from 'node:url';
import { featureStats, frechetDistance } from '../eval/fid.js';
import { randomTensor } from './reference.js';
import type { BenchRow } from './measure.js';
import { toyTrainingBatch } from './toy-training-batch.js';

/** Sections measuring other parts of the project: fine-tuning (g) and FID (h). */
const here = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));

/**
 * Section g: a Safe-CLIP training step (text mode: forward, loss, backward and Adam) over a forward pass of the
 * same training graph, on the toy CLIP with a batch of 64 ViSU caption pairs, as `safe-sd finetune` trains it.
 */
export async function finetuneSection(): Promise<BenchRow[]> {
  const clip = loadClip(here('../../weights/toy-clip'));
  try {
    const tokenizer = Tokenizer.load(here('../../weights/toy-clip'));
    const graph = buildTrainGraph(clip, { mode: 'text' });
    const feeds = toyTrainingBatch(clip, tokenizer, 64).feeds(64);
    // ORT's threads spin between parallel sections by default; with two sessions taking turns on two cores, the
    // spinning threads of one slow the other. Without spinning, each run shows its own cost.
    const rows: BenchRow[] = [];
    for (const [label, session] of [
      ['', {}],
      [', intra-op spinning off', { spinning: false }],
    ] as const) {
      const t = await stepToForwardRatio(clip, { mode: 'text' }, feeds, graph.initial, 10, session);
      rows.push(
        {
          section: 'g fine-tuning',
          name: `toy CLIP text mode, batch 64${label}: forward`,
          value: t.forwardMs,
          unit: 'ms',
        },
        {
          section: 'g fine-tuning',
          name: `training step (forward, backward, Adam)${label}`,
          value: t.stepMs,
          unit: 'ms',
        },
        {
          section: 'g fine-tuning',
          name: `training step / forward pass${label}`,
          value: t.ratio,
          unit: 'ratio',
          note: 'target <= 3.5',
        },
      );
    }
    return rows;
  } finally {
    clip.weights.close();
  }
}

/** Section h: FID statistics of two 10,000 x 2,048 feature sets and the distance between them. */
export async function fidSection(): Promise<BenchRow[]> {
  const section = 'h FID';
  const n = 10_000;
  const d = 2048;
  const a = randomTensor([n, d], 11).data;
  const b = randomTensor([n, d], 12).data;
  let t = performance.now();
  const sa = await featureStats(a, n, d);
  const statsAMs = performance.now() - t;
  t = performance.now();
  const sb = await featureStats(b, n, d);
  const statsBMs = performance.now() - t;
  t = performance.now();
  const distance = await frechetDistance(sa, sb);
  const distanceMs = performance.now() - t;
  return [
    {
      section,
      name: 'featureStats, 10,000 x 2,048',
      value: statsAMs / 1000,
      unit: 's',
      note: `second set: ${(statsBMs / 1000).toFixed(3)} s`,
    },
    {
      section,
      name: 'frechetDistance, 2,048-d',
      value: distanceMs / 1000,
      unit: 's',
      note: `FID of two uniform samples: ${distance.toFixed(3)}`,
    },
    {
      section,
      name: 'FID total: 2 x featureStats + frechetDistance',
      value: (statsAMs + statsBMs + distanceMs) / 1000,
      unit: 's',
      target: '<= 10',
    },
  ];
}
