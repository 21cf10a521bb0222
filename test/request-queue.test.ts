import test from 'ava';
import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import type { BatchJob, GenerationRequest, JobOutcome } from '../src/pipeline/engine-api.js';
import { ServerMetrics } from '../src/serving/metrics.js';
import { RequestQueue, type EntryListener } from '../src/serving/request-queue.js';
import type { PoolWorker, WorkerPool } from '../src/serving/worker-pool.js';

/** One worker that records the batches it is given and finishes each when told. */
class RecordingPool extends EventEmitter {
  readonly batches: string[][] = [];
  readonly models = { defaultPipeline: 'toy', pipelines: [], encoders: [] };
  readonly live = 1;
  sharableWorkers = () => [];
  private finish: (() => void) | undefined;

  private readonly worker = {
    index: 0,
    busy: false,
    cancel: () => {},
    run: (jobs: BatchJob[]) => {
      this.worker.busy = true;
      this.batches.push(jobs.map((j) => j.request.prompt));
      return new Promise<Map<string, JobOutcome>>((resolve) => {
        this.finish = () => {
          this.worker.busy = false;
          resolve(new Map(jobs.map((j) => [j.id, { ok: true, images: [] }])));
        };
      });
    },
  };

  idleWorker(): PoolWorker | undefined {
    return this.worker.busy ? undefined : (this.worker as unknown as PoolWorker);
  }

  finishBatch() {
    this.finish?.();
  }
}

const request = (prompt: string): GenerationRequest => ({
  pipeline: 'toy',
  encoder: 'clip',
  prompt,
  negativePrompt: '',
  seed: 1n,
  steps: 4,
  guidanceScale: 5,
  width: 64,
  height: 64,
  scheduler: 'pndm',
  numImages: 1,
  clipSkip: 0,
});

function listener(done: (ok: boolean) => void): EntryListener {
  return { queued: () => {}, progress: () => {}, done: (r) => done(r.ok) };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

test('requests submitted in one event-loop turn start as one batch, later ones wait for the worker', async (t) => {
  const pool = new RecordingPool();
  const queue = new RequestQueue(
    pool as unknown as WorkerPool,
    { maxQueue: 16, maxBatch: 4 },
    new ServerMetrics(),
    pino({ level: 'silent' }),
  );
  const settled: string[] = [];
  const submit = (prompt: string) =>
    queue.submit(
      prompt,
      [request(prompt)],
      listener(() => settled.push(prompt)),
    );
  submit('a');
  submit('b');
  submit('c');
  await turn();
  t.deepEqual(pool.batches, [['a', 'b', 'c']]);
  submit('d');
  submit('e');
  await turn();
  t.is(pool.batches.length, 1, 'the worker is busy: d and e queue');
  pool.finishBatch();
  await turn();
  t.deepEqual(settled, ['a', 'b', 'c']);
  t.deepEqual(pool.batches, [
    ['a', 'b', 'c'],
    ['d', 'e'],
  ]);
  pool.finishBatch();
  await turn();
  t.deepEqual(settled, ['a', 'b', 'c', 'd', 'e']);
  t.is(queue.queued + queue.active, 0);
});
