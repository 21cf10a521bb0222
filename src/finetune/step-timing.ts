import type { LoadedClip } from '../models/clip-loader.js';
import type { F32Tensor, Tensor } from '../core/tensor.js';
import { serializeModel } from '../onnx/serialize.js';
import { createSession, run, type SessionSettings } from '../onnx/session.js';
import { Adam } from './adam.js';
import { createTrainer, trainStep, values } from './train.js';
import { buildTrainGraph, TOTAL, type TrainGraphOptions } from './train-graph.js';

export interface StepTiming {
  /** Median milliseconds of the forward pass (towers + loss) alone. */
  forwardMs: number;
  /** Median milliseconds of a training step: forward, backward and the Adam update. */
  stepMs: number;
  ratio: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * Median times of `a` and `b`, run alternately after one warm-up call each: on a shared machine the load then
 * weighs on both alike, where timing all of one before all of the other would let a change of load skew the ratio.
 */
async function timedPair(
  repeats: number,
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
): Promise<[number, number]> {
  await a();
  await b();
  const [ta, tb]: number[][] = [[], []];
  for (let i = 0; i < repeats; i++) {
    for (const [f, times] of [
      [a, ta],
      [b, tb],
    ] as const) {
      const t0 = performance.now();
      await f();
      times.push(performance.now() - t0);
    }
  }
  return [median(ta), median(tb)];
}

/**
 * A training step's time over a forward pass's on the same batch (the cost of training relative to inference;
 * reverse mode should stay within a small multiple). Parameters are copied, so `params` is left as it is.
 */
export async function stepToForwardRatio(
  clip: LoadedClip,
  opts: TrainGraphOptions,
  feeds: Record<string, Tensor>,
  params: Map<string, F32Tensor>,
  repeats = 10,
  session: SessionSettings = {},
): Promise<StepTiming> {
  const forwardGraph = buildTrainGraph(clip, opts);
  const forward = await createSession(serializeModel(forwardGraph.g), session);
  const trainer = await createTrainer(clip, opts, session);
  const working = new Map([...params].map(([k, v]) => [k, { ...v, data: v.data.slice() }]));
  const adam = new Adam({ lr: 1e-9 });
  const all = { ...feeds, ...Object.fromEntries(params) };
  const [forwardMs, stepMs] = await timedPair(
    repeats,
    () => run(forward, all, [TOTAL]),
    async () => {
      const res = await trainStep(trainer, feeds, working);
      adam.update(values(working), values(res.grads));
    },
  );
  await forward.release();
  await trainer.session.release();
  return { forwardMs, stepMs, ratio: stepMs / forwardMs };
}
