import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type * as ort from 'onnxruntime-node';
import { loadClip, type LoadedClip } from '../models/clip-loader.js';
import type { F32Tensor, Tensor } from '../core/tensor.js';
import { serializeModel } from '../onnx/serialize.js';
import { createSession, runTensors, type SessionSettings } from '../onnx/session.js';
import { Tokenizer } from '../pipeline/tokenizer.js';
import { Adam, type Gradient, type RowGradient } from './adam.js';
import { AdversarialSearch, type AdversarialOptions, type AdversarialPairs } from './adversarial.js';
import { buildGradients, exposeGradients, type GradientValue } from '../autodiff/autodiff.js';
import { BatchOrder } from './batches.js';
import { loadCheckpoint, saveCheckpoint, type RunState } from './checkpoint.js';
import { DataError, dropRows, loadPixels, readImageEmbeds, readVisu, type DataProblem, type VisuRow } from './data.js';
import { exportClipModel, exportTextModel, trainedWeights } from './export.js';
import { initLora, loraKey, type LoraOptions } from './lora.js';
import { cachedImageEmbeds, ReferenceModel, row, stack } from './reference.js';
import { Rng } from '../core/rng.js';
import {
  buildTrainGraph,
  IN,
  requireClipModel,
  TOTAL,
  type Mode,
  type TrainGraph,
  type TrainGraphOptions,
} from './train-graph.js';

/** Everything a fine-tuning run is given. */
export interface TrainOptions {
  clipDir: string;
  data: string;
  out: string;
  mode: Mode;
  lora?: LoraOptions;
  steps: number;
  batch: number;
  lr: number;
  seed: number;
  resume?: boolean;
  checkpointEvery: number;
  strict?: boolean;
  /** Precomputed reference image embeddings (text mode), see data.ts readImageEmbeds. */
  imageEmbeds?: string;
  /** Weight of the optional hidden-state term (0: the paper's losses only). */
  hiddenWeight?: number;
  /**
   * Start the trained tower from this CLIP folder's weights (those it has, e.g. a CLIPTextModel's text tower) instead
   * of --clip's; the reference model stays --clip. Full fine-tuning only.
   */
  init?: string;
  /** Adversarial training: GCG prompts against the encoder in training join the batches (adversarial.ts). */
  adversarial?: AdversarialOptions;
  /** Stop (as if killed) after this many steps of this invocation, checkpointing first; for tests. */
  stopAfter?: number;
  onProblems?: (problems: DataProblem[]) => void;
  onStart?: (info: { rows: number; startStep: number }) => void;
  onStep?: (info: { step: number; losses: Record<string, number> }) => void;
  onAdversarial?: (info: { step: number; pairs: AdversarialPairs }) => void;
}

export interface TrainResult {
  steps: number;
  params: Map<string, F32Tensor>;
  losses: Record<string, number>;
  seconds: number;
}

export const CHECKPOINT = 'checkpoint.safetensors';
export const IMAGE_EMBEDS_CACHE = 'image-embeds.safetensors';
export const CLIP_MODEL_DIR = 'clip-model';

/** The settings a resumed run must share with the run it continues. */
function settingsOf(o: TrainOptions): Record<string, unknown> {
  const settings: Record<string, unknown> = {
    mode: o.mode,
    lora: o.lora ?? null,
    batch: o.batch,
    lr: o.lr,
    seed: o.seed,
    hiddenWeight: o.hiddenWeight ?? 0,
  };
  if (o.adversarial) settings.adversarial = o.adversarial;
  if (o.init) settings.init = o.init;
  return settings;
}

/** Rows tokenised once: [n, 77] ids and each caption's length with its start and end tokens. */
interface Captions {
  ids: BigInt64Array;
  lengths: number[];
  seqLen: number;
}

function tokenize(tokenizer: Tokenizer, texts: string[]): Captions {
  const seqLen = tokenizer.maxLength;
  const ids = new BigInt64Array(texts.length * seqLen);
  const lengths = texts.map((t, i) => {
    const e = tokenizer.encode(t);
    e.inputIds.forEach((id, j) => {
      ids[i * seqLen + j] = BigInt(id);
    });
    return Math.min(e.untruncatedLength, seqLen);
  });
  return { ids, lengths, seqLen };
}

/** Ids of the chosen rows, cut to `len` tokens (causal attention: the tokens up to the end token are unchanged). */
function idsOf(c: Captions, rows: number[], len: number): Tensor {
  const out = new BigInt64Array(rows.length * len);
  rows.forEach((r, i) => {
    out.set(c.ids.subarray(r * c.seqLen, r * c.seqLen + len), i * len);
  });
  return { dtype: 'I64', shape: [rows.length, len], data: out };
}

function gather(vectors: F32Tensor[], rows: number[]): F32Tensor {
  return stack(rows.map((r) => vectors[r]));
}

/** The data, the reference outputs and the captions a run needs, prepared before its first step. */
interface Prepared {
  rows: VisuRow[];
  safe: Captions;
  nsfw: Captions;
  Sref: F32Tensor[];
  Vref: F32Tensor[];
  safePixels?: F32Tensor[];
  nsfwPixels?: F32Tensor[];
  reference: ReferenceModel;
  tokenizer: Tokenizer;
}

async function prepare(clip: LoadedClip, o: TrainOptions, projectionDim: number): Promise<Prepared> {
  const tokenizer = Tokenizer.load(clip.dir);
  const precomputed = o.mode === 'text' && o.imageEmbeds !== undefined;
  let data = readVisu(o.data, { strict: o.strict, checkImages: !precomputed });
  const reference = await ReferenceModel.create(clip, !precomputed);
  const size = clip.visionConfig!.imageSize;
  let pixels: Map<string, F32Tensor> | undefined;
  if (o.mode === 'full') {
    const loaded = await loadPixels(data.rows, size, ['safe', 'nsfw']);
    data = dropRows(data, loaded.bad, o.strict);
    pixels = loaded.pixels;
  }
  let vref: Map<string, F32Tensor>;
  if (precomputed) {
    const read = readImageEmbeds(o.imageEmbeds!, data.rows, projectionDim, ['safe']);
    data = dropRows(data, read.bad, o.strict);
    vref = read.embeds;
  } else {
    const cache = join(o.out, IMAGE_EMBEDS_CACHE);
    if (!pixels && !existsSync(cache)) {
      const loaded = await loadPixels(data.rows, size, ['safe']);
      data = dropRows(data, loaded.bad, o.strict);
      pixels = loaded.pixels;
    }
    const rows = data.rows;
    vref = await cachedImageEmbeds(reference, rows, projectionDim, cache, async () => {
      if (pixels) return pixels;
      const loaded = await loadPixels(rows, size, ['safe']);
      if (loaded.bad.size)
        throw new DataError(
          `${cache}: the cached image embeddings do not cover the data; delete the file to recompute them`,
        );
      return loaded.pixels;
    });
  }
  if (data.rows.length < o.batch)
    throw new DataError(`${data.file}: ${data.rows.length} usable rows, fewer than the batch size ${o.batch}`);
  o.onProblems?.(data.problems);
  const rows = data.rows;
  const safe = tokenize(
    tokenizer,
    rows.map((r) => r.safe),
  );
  const nsfw = tokenize(
    tokenizer,
    rows.map((r) => r.nsfw),
  );
  const sref = await reference.textEmbeds(safe.ids, safe.seqLen);
  return {
    rows,
    safe,
    nsfw,
    Sref: rows.map((_, i) => row(sref.embeds, i)),
    Vref: rows.map((r) => vref.get(`${r.id}.safe`)!),
    safePixels: o.mode === 'full' ? rows.map((r) => pixels!.get(`${r.id}.safe`)!) : undefined,
    nsfwPixels: o.mode === 'full' ? rows.map((r) => pixels!.get(`${r.id}.nsfw`)!) : undefined,
    reference,
    tokenizer,
  };
}

/** The GCG search of adversarial training, its targets the reference (original) encoder's hidden states. */
function adversarialSearch(clip: LoadedClip, p: Prepared, o: AdversarialOptions, seed: number): AdversarialSearch {
  if (p.safePixels)
    throw new DataError(
      'adversarial training runs in text mode (--mode text): the adversarial prompts have no pictures',
    );
  const targetHidden = async (rows: number[]) =>
    (await p.reference.textEmbeds(idsOf(p.nsfw, rows, p.nsfw.seqLen).data as BigInt64Array, p.nsfw.seqLen)).hidden;
  return new AdversarialSearch(o, clip.textConfig!, p.tokenizer, targetHidden, seed);
}

/** The feeds of one batch, everything but the parameters; adversarial prompts are appended as extra unsafe captions. */
async function batchFeeds(
  p: Prepared,
  batch: number[],
  hiddenWeight: number,
  adv?: AdversarialPairs,
): Promise<Record<string, Tensor>> {
  const advCaptions = adv && tokenize(p.tokenizer, adv.prompts);
  const advIndex = adv ? adv.prompts.map((_, i) => i) : [];
  const rows = adv ? [...batch, ...adv.rows] : batch;
  // Without the hidden-state term only the pooled (end-token) outputs matter, so padding past the longest caption
  // can go; the hidden-state term compares the whole sequence the UNet sees.
  const longest = Math.max(
    ...batch.flatMap((r) => [p.safe.lengths[r], p.nsfw.lengths[r]]),
    ...(adv ? adv.rows.map((r) => p.safe.lengths[r]) : []),
    ...(advCaptions?.lengths ?? []),
  );
  const len = hiddenWeight ? p.safe.seqLen : longest;
  const nsfwIds = idsOf(p.nsfw, batch, len);
  const feeds: Record<string, Tensor> = {
    [IN.safeIds]: idsOf(p.safe, rows, len),
    [IN.nsfwIds]: advCaptions ? concatRows(nsfwIds, idsOf(advCaptions, advIndex, len)) : nsfwIds,
    [IN.Sref]: gather(p.Sref, rows),
    [IN.Vref]: gather(p.Vref, rows),
  };
  if (p.safePixels && p.nsfwPixels) {
    if (adv) throw new Error('adversarial training runs in text mode: the adversarial prompts have no pictures');
    feeds[IN.safePixels] = gather(p.safePixels, batch);
    feeds[IN.nsfwPixels] = gather(p.nsfwPixels, batch);
  }
  if (hiddenWeight) {
    const ids = feeds[IN.safeIds].data as BigInt64Array;
    feeds[IN.SrefHidden] = (await p.reference.textEmbeds(ids, len)).hidden;
  }
  return feeds;
}

function concatRows(a: Tensor, b: Tensor): Tensor {
  const data = new BigInt64Array(a.data.length + b.data.length);
  data.set(a.data as BigInt64Array);
  data.set(b.data as BigInt64Array, a.data.length);
  return { dtype: 'I64', shape: [a.shape[0] + b.shape[0], a.shape[1]], data };
}

function startingParams(tg: TrainGraph, o: TrainOptions): Map<string, F32Tensor> {
  if (o.init) {
    if (o.lora) throw new DataError('--init starts a full fine-tune from other weights; it does not combine with LoRA');
    const init = loadClip(o.init);
    try {
      const params = new Map(tg.initial);
      let taken = 0;
      for (const key of params.keys()) {
        if (!init.weights.has(key)) continue;
        const w = init.weights.get(key);
        if (w.shape.join() !== params.get(key)!.shape.join())
          throw new DataError(`--init ${o.init}: ${key} has shape [${w.shape}], the model [${params.get(key)!.shape}]`);
        params.set(key, { ...w, data: w.data.slice() });
        taken++;
      }
      if (!taken) throw new DataError(`--init ${o.init}: none of its weights is a trained weight of the model`);
      return params;
    } finally {
      init.weights.close();
    }
  }
  if (!o.lora) return new Map(tg.initial);
  const rng = Rng.fromSeed(o.seed ^ 0x10a);
  const params = new Map<string, F32Tensor>();
  for (const module of tg.loraModules) {
    const weightShape = tg.g.initializers.get(`${module}.weight.base`)!.shape;
    const { A, B } = initLora(weightShape, o.lora.rank, rng);
    params.set(loraKey(module, 'A'), A);
    params.set(loraKey(module, 'B'), B);
  }
  return params;
}

/** Adam updates the parameters' arrays in place. */
export function values(m: Map<string, F32Tensor>): Map<string, Float32Array>;
export function values(m: Map<string, F32Tensor | RowGradient>): Map<string, Gradient>;
export function values(m: Map<string, F32Tensor | RowGradient>): Map<string, Gradient> {
  return new Map([...m].map(([k, v]) => [k, 'rows' in v ? v : v.data]));
}

function lossValues(out: Record<string, F32Tensor>, names: string[]): Record<string, number> {
  const losses: Record<string, number> = {};
  for (const n of names) losses[n.replace(/^loss\./, '')] = out[n].data[0];
  losses.total = out[TOTAL].data[0];
  return losses;
}

/** The training session and what it takes and gives. */
export interface Trainer {
  graph: TrainGraph;
  session: ort.InferenceSession;
  /** Output names of each parameter's gradient: dense, or rows and their values for the token embedding. */
  grads: Map<string, GradientValue>;
}

export async function createTrainer(
  clip: LoadedClip,
  o: TrainGraphOptions,
  session: SessionSettings = {},
): Promise<Trainer> {
  const graph = buildTrainGraph(clip, o);
  const wrt = buildGradients(
    graph.g,
    graph.loss.total,
    graph.params.map((p) => p.name),
    { rows: true },
  );
  const grads = exposeGradients(graph.g, wrt, new Map(graph.params.map((p) => [p.name, p.shape])));
  return { graph, session: await createSession(serializeModel(graph.g), session), grads };
}

/** One forward + backward on `feeds` with `params`: the losses and the gradients by parameter. */
export async function trainStep(
  t: Trainer,
  feeds: Record<string, Tensor>,
  params: Map<string, F32Tensor>,
): Promise<{ losses: Record<string, number>; grads: Map<string, F32Tensor | RowGradient> }> {
  const names = [...t.grads.values()].flatMap((n) => (typeof n === 'string' ? [n] : [n.rows, n.values]));
  const out = await runTensors(t.session, { ...feeds, ...Object.fromEntries(params) }, [
    ...t.graph.lossOutputs,
    TOTAL,
    ...names,
  ]);
  const grads = new Map<string, F32Tensor | RowGradient>();
  for (const [param, name] of t.grads) {
    if (typeof name === 'string') {
      grads.set(param, out[name] as F32Tensor);
    } else {
      const values = out[name.values] as F32Tensor;
      grads.set(param, { rows: out[name.rows].data as BigInt64Array, values: values.data, width: values.shape[1] });
    }
  }
  return { losses: lossValues(out as Record<string, F32Tensor>, t.graph.lossOutputs), grads };
}

/** Fine-tune, checkpointing as it goes, and export the result (unless stopped early by `stopAfter`). */
export async function train(o: TrainOptions): Promise<TrainResult> {
  const started = performance.now();
  mkdirSync(o.out, { recursive: true });
  const clip = loadClip(o.clipDir);
  try {
    const { projectionDim } = requireClipModel(clip);
    const trainer = await createTrainer(clip, o);
    const p = await prepare(clip, o, projectionDim);
    const checkpointPath = join(o.out, CHECKPOINT);
    const settings = settingsOf(o);

    let params: Map<string, F32Tensor>;
    const adam = new Adam({ lr: o.lr });
    let order: BatchOrder;
    let step = 0;
    if (o.resume && existsSync(checkpointPath)) {
      const c = loadCheckpoint(checkpointPath);
      if (JSON.stringify(c.state.settings) !== JSON.stringify(settings)) {
        throw new Error(
          `${checkpointPath}: the checkpoint was made with ${JSON.stringify(c.state.settings)}, not ` +
            `${JSON.stringify(settings)}`,
        );
      }
      for (const { name } of trainer.graph.params)
        if (!c.params.has(name)) throw new Error(`${checkpointPath}: no parameter ${name}`);
      params = c.params;
      adam.load({ step: c.state.optimizer.step as number, tensors: c.optimizer });
      order = BatchOrder.restore(p.rows.length, o.batch, c.state);
      step = c.state.step;
    } else {
      params = startingParams(trainer.graph, o);
      order = BatchOrder.start(p.rows.length, o.batch, o.seed);
    }
    o.onStart?.({ rows: p.rows.length, startStep: step });

    const checkpoint = () => {
      const adamState = adam.state();
      const state: RunState = { step, ...order.state, settings, optimizer: { step: adamState.step } };
      saveCheckpoint(checkpointPath, { state, params, optimizer: adamState.tensors });
    };
    let losses: Record<string, number> = {};
    let done = 0;
    const search = o.adversarial && adversarialSearch(clip, p, o.adversarial, o.seed);
    let adv: AdversarialPairs | undefined;
    while (step < o.steps) {
      if (search && (adv === undefined || step % o.adversarial!.every === 0)) {
        const weights = trainedWeights(clip, params, o.lora && { options: o.lora, modules: trainer.graph.loraModules });
        adv = await search.search(
          step,
          weights,
          p.rows.map((r) => r.nsfw),
        );
        o.onAdversarial?.({ step, pairs: adv });
      }
      const feeds = await batchFeeds(p, order.next(), o.hiddenWeight ?? 0, adv);
      const res = await trainStep(trainer, feeds, params);
      adam.update(values(params), values(res.grads));
      step++;
      done++;
      losses = res.losses;
      o.onStep?.({ step, losses });
      if ((o.checkpointEvery > 0 && step % o.checkpointEvery === 0) || step === o.steps || done === o.stopAfter)
        checkpoint();
      if (done === o.stopAfter) break;
    }
    if (step === o.steps) {
      const weights = trainedWeights(clip, params, o.lora && { options: o.lora, modules: trainer.graph.loraModules });
      exportTextModel(clip, weights, o.out);
      exportClipModel(clip, weights, join(o.out, CLIP_MODEL_DIR));
    }
    return { steps: step, params, losses, seconds: (performance.now() - started) / 1000 };
  } finally {
    clip.weights.close();
  }
}
