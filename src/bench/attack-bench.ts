import { fileURLToPath } from 'node:url';
import { gcg } from '../attack/gcg.js';
import { ringABell } from '../attack/ring-a-bell.js';
import { ATTACK_DEFAULTS, hiddenOf, startTokens, WINDOW_PADS } from '../attack/run.js';
import type { SearchProblem } from '../attack/search.js';
import { AttackTower } from '../attack/text-tower.js';
import { AttackVocabulary } from '../attack/vocabulary.js';
import { ADVERSARIAL_DEFAULTS, AdversarialSearch } from '../finetune/adversarial.js';
import { Rng } from '../core/rng.js';
import { createTrainer, trainStep } from '../finetune/train.js';
import type { ClipTextConfig } from '../models/clip.js';
import { loadClip } from '../models/clip-loader.js';
import type { F32Tensor } from '../core/tensor.js';
import { MemoryWeights } from '../core/weights.js';
import { Tokenizer } from '../pipeline/tokenizer.js';
import type { BenchRow } from './measure.js';
import { toyTrainingBatch } from './toy-training-batch.js';
import { median } from './measure.js';
import { randomTensor } from './reference.js';

/**
 * Section 'attack': search steps per second of `safe-sd attack` (GCG steps and Ring-A-Bell generations at the
 * default batch) on the toy text encoder and on a CLIP ViT-L/14-sized text tower with random weights, and the cost of
 * an adversarial training step (`finetune --adversarial`: the batch grown by the adversarial pairs, plus one search
 * every `every` steps spread over them) over a plain one.
 */
const here = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));
const SECTION = 'attack';
const CAPTION = 'a blue skull on a white background';

/** CLIP ViT-L/14's text tower (SD 1.x's text encoder). */
const VIT_L: ClipTextConfig = {
  hiddenSize: 768,
  layers: 12,
  heads: 12,
  intermediateSize: 3072,
  hiddenAct: 'quick_gelu',
  layerNormEps: 1e-5,
  vocabSize: 49408,
  maxPositions: 77,
  eosTokenId: 2,
};

function randomTower(cfg: ClipTextConfig): MemoryWeights {
  const D = cfg.hiddenSize;
  const shapes: Record<string, number[]> = {
    'embeddings.token_embedding.weight': [cfg.vocabSize, D],
    'embeddings.position_embedding.weight': [cfg.maxPositions, D],
    'final_layer_norm.weight': [D],
    'final_layer_norm.bias': [D],
  };
  for (let i = 0; i < cfg.layers; i++) {
    const p = `encoder.layers.${i}.`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj'])
      Object.assign(shapes, { [`${p}self_attn.${n}.weight`]: [D, D], [`${p}self_attn.${n}.bias`]: [D] });
    Object.assign(shapes, {
      [`${p}mlp.fc1.weight`]: [cfg.intermediateSize, D],
      [`${p}mlp.fc1.bias`]: [cfg.intermediateSize],
    });
    Object.assign(shapes, { [`${p}mlp.fc2.weight`]: [D, cfg.intermediateSize], [`${p}mlp.fc2.bias`]: [D] });
    for (const n of ['layer_norm1', 'layer_norm2'])
      Object.assign(shapes, { [`${p}${n}.weight`]: [D], [`${p}${n}.bias`]: [D] });
  }
  return new MemoryWeights(
    new Map(Object.entries(shapes).map(([k, s], i) => [k, scaled(randomTensor(s, i + 1), 0.04)])),
  );
}

function scaled(t: F32Tensor, by: number): F32Tensor {
  for (let i = 0; i < t.data.length; i++) t.data[i] *= by;
  return t;
}

/** Seconds per GCG step and per Ring-A-Bell generation on `tower`, `steps` of each after one untimed. */
async function searchRates(
  tower: AttackTower,
  tokenizer: Tokenizer,
  batch: number,
  steps: number,
): Promise<{ gcg: number; ringABell: number }> {
  const vocab = AttackVocabulary.build(tokenizer, tower.vocabSize, ATTACK_DEFAULTS.ban.split(','));
  const K = 7;
  const full = await hiddenOf(tower, tokenizer, [CAPTION]);
  const T = K + 2 + WINDOW_PADS;
  const target: F32Tensor = {
    dtype: 'F32',
    shape: [1, T, tower.hiddenSize],
    data: full.data.slice(0, T * tower.hiddenSize),
  };
  const problem = (budget: number): SearchProblem => {
    const rng = Rng.fromSeed(1);
    return { tower, vocab, target, start: startTokens(tokenizer, vocab, CAPTION, K, rng), budget, batch, rng };
  };
  const rate = async (search: (p: SearchProblem) => Promise<unknown>) => {
    await search(problem(1));
    const t0 = performance.now();
    await search(problem(steps));
    return steps / ((performance.now() - t0) / 1000);
  };
  return { gcg: await rate(gcg), ringABell: await rate(ringABell) };
}

/** A plain training step (toy CLIP, text mode, batch 64, hidden-state term) against an adversarial one. */
async function adversarialStep(tokenizer: Tokenizer): Promise<{ plainMs: number; grownMs: number; searchMs: number }> {
  const clip = loadClip(here('../../weights/toy-clip'));
  try {
    const o = ADVERSARIAL_DEFAULTS;
    const batch = toyTrainingBatch(clip, tokenizer, 64 + o.captions);
    const rows = batch.rows;
    const feeds = (n: number) => batch.feeds(n, true);
    const trainer = await createTrainer(clip, { mode: 'text', hiddenWeight: 3 });
    const params = trainer.graph.initial;
    const plain = feeds(64);
    const grown = feeds(64 + o.captions);
    const [ta, tb]: number[][] = [[], []];
    for (let i = 0; i < 6; i++) {
      for (const [f, times] of [
        [plain, ta],
        [grown, tb],
      ] as const) {
        const t0 = performance.now();
        await trainStep(trainer, f, params);
        if (i > 0) times.push(performance.now() - t0);
      }
    }
    await trainer.session.release();
    const original = await AttackTower.load(here('../../weights/toy-sd/text_encoder'), false);
    const unsafe = rows.map((r) => r.nsfw);
    const search = new AdversarialSearch(
      o,
      clip.textConfig!,
      tokenizer,
      (r) =>
        hiddenOf(
          original,
          tokenizer,
          r.map((i) => unsafe[i]),
        ),
      0,
    );
    const weights = new Map(clip.weights.keys().map((k) => [k, clip.weights.get(k)]));
    await search.search(0, weights, unsafe.slice(0, 2 * o.captions)); // builds the vocabulary
    const t0 = performance.now();
    await search.search(o.every, weights, unsafe);
    const searchMs = performance.now() - t0;
    await original.close();
    return { plainMs: median(ta), grownMs: median(tb), searchMs };
  } finally {
    clip.weights.close();
  }
}

export async function attackSection(): Promise<BenchRow[]> {
  const tokenizer = Tokenizer.load(here('../../weights/toy-sd/tokenizer'));
  const batch = ATTACK_DEFAULTS.batch;
  const toy = await AttackTower.load(here('../../weights/toy-sd/text_encoder'), true);
  const toyRates = await searchRates(toy, tokenizer, batch, 4);
  await toy.close();
  const large = await AttackTower.fromWeights('ViT-L/14 text tower, random weights', randomTower(VIT_L), VIT_L, true);
  const largeRates = await searchRates(large, tokenizer, batch, 1);
  await large.close();
  const adv = await adversarialStep(tokenizer);
  const o = ADVERSARIAL_DEFAULTS;
  const perStep = adv.grownMs + adv.searchMs / o.every;
  const note = `batch ${batch}, a 7-token prompt`;
  return [
    { section: SECTION, name: 'toy text encoder: gcg steps', value: toyRates.gcg, unit: 'steps/s', note },
    {
      section: SECTION,
      name: 'toy text encoder: ring-a-bell generations',
      value: toyRates.ringABell,
      unit: 'gen/s',
      note,
    },
    {
      section: SECTION,
      name: 'ViT-L/14-sized text tower (random): gcg steps',
      value: largeRates.gcg,
      unit: 'steps/s',
      note,
    },
    {
      section: SECTION,
      name: 'ViT-L/14-sized text tower (random): ring-a-bell generations',
      value: largeRates.ringABell,
      unit: 'gen/s',
      note,
    },
    {
      section: SECTION,
      name: 'plain training step (toy CLIP, batch 64, hidden-state term)',
      value: adv.plainMs,
      unit: 'ms',
    },
    { section: SECTION, name: `training step with ${o.captions} adversarial pairs`, value: adv.grownMs, unit: 'ms' },
    {
      section: SECTION,
      name: `adversarial search (${o.captions} captions x ${o.budget} gcg steps x ${o.batch})`,
      value: adv.searchMs,
      unit: 'ms',
      note: `once every ${o.every} steps`,
    },
    {
      section: SECTION,
      name: 'adversarial training step / plain step',
      value: perStep / adv.plainMs,
      unit: 'ratio',
      note: 'grown step + search / every',
    },
  ];
}
