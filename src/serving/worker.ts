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
import { type FromWorker, type ToWorker, type WorkerInit } from './worker-protocol.js';

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
      groups.set(key, [...(groups.get(key) ?? []), { id: job.id, request }]);
    } catch (e) {
      const failure = e instanceof InvalidRequestError ? 'invalid' : 'error';
      outcomes.set(job.id, { ok: false, failure, message: errorMessage(e) });
    }
  }
  const hooks = {
    onProgress: (jobId: string, step: number, total: number) =>
      post({ type: 'progress', batchId, jobId, step, total }),
    onPreview: (jobId: string, step: number, preview: PreviewImage) =>
      post({ type: 'preview', batchId, jobId, step, preview }),
    isCancelled: (jobId: string) => Atomics.load(flags, index.get(jobId)!) !== 0,
  };
  for (const group of groups.values()) {
    const live = group.filter((j) => !hooks.isCancelled(j.id));
    for (const j of group) if (!live.includes(j)) outcomes.set(j.id, { ok: false, failure: 'cancelled', message: 'cancelled' });
    if (live.length === 0) continue;
    const result = await engine.runBatch(live, hooks);
    for (const j of live) {
      outcomes.set(j.id, result.get(j.id) ?? { ok: false, failure: 'error', message: 'engine returned no outcome' });
    }
  }
  post({ type: 'batch-done', batchId, outcomes: [...outcomes] });
}

let engine: Engine;
try {
  engine = await loadEngine();
  post({ type: 'ready', models: engine.models() });
} catch (e) {
  post({ type: 'init-failed', message: errorMessage(e) });
  process.exit(1);
}

// The batch in flight: a close waits for it, so the engine is never released under a running UNet call (the pool
// cancels the batch first, and it returns within one call).
let current: Promise<void> = Promise.resolve();

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'run-batch') {
    current = runBatch(engine, msg.batchId, msg.jobs, new Int32Array(msg.cancelFlags)).catch((e) =>
      post({ type: 'batch-failed', batchId: msg.batchId, message: errorMessage(e) }),
    );
  } else if (msg.type === 'close') {
    current
      .then(() => engine.close())
      .catch(() => undefined)
      .finally(() => {
        post({ type: 'closed' });
        port.close();
      });
  }
});
