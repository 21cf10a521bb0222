/**
 * Inference worker thread: owns one engine, runs the batches the pool sends, reports progress and outcomes.
 * Started by worker-pool.ts with a `WorkerInit` as workerData.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import {
  batchKey,
  InvalidRequestError,
  type BatchJob,
  type Engine,
  type JobOutcome,
  type PreviewImage,
} from '../pipeline/engine-api.js';
import type { FromWorker, ToWorker, WorkerInit } from './worker-protocol.js';
import { unetPixelsPerStep } from './admission.js';
import { StepGate } from './step-gate.js';

const port = parentPort!;
const init = workerData as WorkerInit;
const post = (m: FromWorker) => port.postMessage(m);

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function loadEngine(): Promise<Engine> {
  const url = init.engineModule.startsWith('file:') ? init.engineModule : pathToFileURL(init.engineModule).href;
  const mod = (await import(url)) as { createEngine?: (o: Record<string, unknown>) => Promise<Engine> };
  if (typeof mod.createEngine !== 'function') {
    throw new Error(`engine module ${init.engineModule} does not export createEngine`);
  }
  return mod.createEngine(init.engineOptions);
}

async function runBatch(engine: Engine, batchId: number, jobs: BatchJob[], flags: Int32Array) {
  const index = new Map(jobs.map((j, i) => [j.id, i]));
  const outcomes = new Map<string, JobOutcome>();
  // The engine re-resolves every request: the server validated against ModelsInfo, the engine may know more.
  const groups = new Map<string, BatchJob[]>();
  for (const job of jobs) {
    try {
      const request = engine.resolve(job.request);
      const key = batchKey(request);
      groups.set(key, [...(groups.get(key) ?? []), { id: job.id, request, previews: job.previews }]);
    } catch (e) {
      const failure = e instanceof InvalidRequestError ? 'invalid' : 'error';
      outcomes.set(job.id, { ok: false, failure, message: errorMessage(e) });
    }
  }
  let stepsDone = 0;
  const hooks = {
    onProgress: (jobId: string, step: number, total: number) => {
      stepsDone = Math.max(stepsDone, step);
      post({ type: 'progress', batchId, jobId, step, total });
    },
    onPreview: (jobId: string, step: number, preview: PreviewImage) =>
      post({ type: 'preview', batchId, jobId, step, preview }),
    isCancelled: (jobId: string) => Atomics.load(flags, index.get(jobId)!) !== 0,
    yieldBetweenSteps: () => {
      const live = jobs.filter((j) => !hooks.isCancelled(j.id)).map((j) => j.request);
      return gate.turn(batchId, unetPixelsPerStep(live) * ((live[0]?.steps ?? 0) - stepsDone));
    },
  };
  for (const group of groups.values()) {
    const live = group.filter((j) => !hooks.isCancelled(j.id));
    for (const j of group)
      if (!live.includes(j)) outcomes.set(j.id, { ok: false, failure: 'cancelled', message: 'cancelled' });
    if (live.length === 0) continue;
    const result = await engine.runBatch(live, hooks);
    for (const j of live) {
      outcomes.set(j.id, result.get(j.id) ?? { ok: false, failure: 'error', message: 'engine returned no outcome' });
    }
  }
  post({ type: 'batch-done', batchId, outcomes: [...outcomes] });
}

/** Batches in flight share the thread step by step, the one with the least work left first. */
const gate = new StepGate();
const inFlight = new Set<Promise<void>>();

let engine: Engine;
try {
  engine = await loadEngine();
  post({ type: 'ready', models: engine.models() });
} catch (e) {
  post({ type: 'init-failed', message: errorMessage(e) });
  process.exit(1);
}

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'run-batch') {
    const batch = runBatch(engine, msg.batchId, msg.jobs, new Int32Array(msg.cancelFlags))
      .catch((e) => post({ type: 'batch-failed', batchId: msg.batchId, message: errorMessage(e) }))
      .finally(() => {
        gate.release(msg.batchId);
        inFlight.delete(batch);
      });
    inFlight.add(batch);
  } else if (msg.type === 'close') {
    // A close waits for the batches in flight, so the engine is never released under a running UNet call (the pool
    // cancels them first, and they return within one call).
    Promise.all(inFlight)
      .then(() => engine.close())
      .catch(() => undefined)
      .finally(() => {
        post({ type: 'closed' });
        port.close();
      });
  }
});
