import test from 'ava';
import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import type { BatchJob, GenerationRequest, JobOutcome, ModelsInfo } from '../src/pipeline/engine-api.js';
import { pipelineLimits } from '../src/pipeline/manifest.js';
import { batchPixels, refusal, StepRates, unetPixelsPerStep } from '../src/serving/admission.js';
import { setLongTimeout } from '../src/serving/long-timer.js';
import { ServerMetrics } from '../src/serving/metrics.js';
import { RejectedError, RequestQueue, type EntryResult } from '../src/serving/request-queue.js';
import type { BatchHandlers, PoolWorker, WorkerPool } from '../src/serving/worker-pool.js';

const LIMITS = { maxPixels: 128 * 128, maxBatchPixels: 16 * 64 * 64 };

const MODELS: ModelsInfo = {
  defaultPipeline: 'toy',
  pipelines: [
    {
      name: 'toy',
      defaultEncoder: 'clip',
      defaultWidth: 64,
      defaultHeight: 64,
      defaultSteps: 10,
      defaultGuidanceScale: 5,
      defaultScheduler: 'pndm',
      crossAttentionDim: 32,
      limits: LIMITS,
    },
  ],
  encoders: [],
};

const request = (prompt: string, over: Partial<GenerationRequest> = {}): GenerationRequest => ({
  pipeline: 'toy',
  encoder: 'clip',
  prompt,
  negativePrompt: '',
  seed: 1n,
  steps: 10,
  guidanceScale: 5,
  width: 64,
  height: 64,
  scheduler: 'pndm',
  numImages: 1,
  clipSkip: 0,
  ...over,
});

interface ManualBatch {
  jobs: BatchJob[];
  handlers: BatchHandlers;
  cancelled: Set<string>;
  finish(): void;
}

/** Workers the test drives by hand: it reports steps and finishes batches itself. */
class ManualPool extends EventEmitter {
  readonly models = MODELS;
  readonly batches: ManualBatch[] = [];
  live: number;
  private readonly workers: Array<{
    busy: boolean;
    batches: number;
    cancel(id: string): void;
    run(jobs: BatchJob[], h: BatchHandlers): Promise<Map<string, JobOutcome>>;
  }>;

  constructor(size = 1) {
    super();
    this.live = size;
    this.workers = Array.from({ length: size }, () => {
      const w = {
        busy: false,
        get batches() {
          return this.busy ? 1 : 0;
        },
        cancel: (id: string) => this.batches.at(-1)?.cancelled.add(id),
        run: (jobs: BatchJob[], handlers: BatchHandlers) => {
          w.busy = true;
          return new Promise<Map<string, JobOutcome>>((resolve) => {
            this.batches.push({
              jobs,
              handlers,
              cancelled: new Set(),
              finish: () => {
                w.busy = false;
                resolve(new Map(jobs.map((j) => [j.id, { ok: true, images: [] }])));
              },
            });
          });
        },
      };
      return w;
    });
  }

  idleWorker(): PoolWorker | undefined {
    return this.workers.find((w) => !w.busy) as unknown as PoolWorker | undefined;
  }

  sharableWorkers(): PoolWorker[] {
    return [];
  }
}

const turn = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function setup(size = 1, maxQueue = 16) {
  const pool = new ManualPool(size);
  const metrics = new ServerMetrics();
  const queue = new RequestQueue(
    pool as unknown as WorkerPool,
    { maxQueue, maxBatch: 4 },
    metrics,
    pino({ level: 'silent' }),
  );
  const results = new Map<string, EntryResult>();
  const submit = (id: string, requests: GenerationRequest[], deadline?: number) =>
    queue.submit(id, requests, { queued: () => {}, progress: () => {}, done: (r) => results.set(id, r) }, { deadline });
  const outcomes = async () =>
    Object.fromEntries((await metrics.requests.get()).values.map((v) => [v.labels.outcome, v.value]));
  return { pool, queue, results, submit, outcomes };
}

test('cost: batch pixels count every column and image, UNet pixels double with guidance', (t) => {
  const compare = [request('a', { numImages: 2 }), request('a', { numImages: 2, encoder: 'safe' })];
  t.is(batchPixels(compare), 4 * 64 * 64);
  t.is(unetPixelsPerStep(compare), 8 * 64 * 64);
  t.is(unetPixelsPerStep([request('a', { guidanceScale: 1 })]), 64 * 64);
});

test('default limits: 4x the native pixels per image, 16 native images per batch', (t) => {
  t.deepEqual(pipelineLimits({}, 512), { maxPixels: 4 * 512 * 512, maxBatchPixels: 16 * 512 * 512 });
  t.deepEqual(pipelineLimits({ maxPixels: 10 }, 64), { maxPixels: 10, maxBatchPixels: 16 * 64 * 64 });
});

test('step rates follow the measured steps; nothing is estimated before a measurement', (t) => {
  const rates = new StepRates();
  t.is(rates.seconds([request('a')]), undefined);
  rates.observe('toy', 2 * 64 * 64, 0.1);
  // 10 steps of one guided 64x64 image at 0.1 s per step.
  t.is(rates.seconds([request('a')])!.toFixed(6), (1).toFixed(6));
  rates.observe('toy', 2 * 64 * 64, 0.2);
  t.true(rates.seconds([request('a')])! > 1, 'a slower step raises the estimate');
});

test('refusal: over the batch budget always; too slow for the deadline only once measured', (t) => {
  const rates = new StepRates();
  const huge = Array.from({ length: 8 }, (_, i) =>
    request('x', { encoder: `e${i}`, numImages: 16, width: 128, height: 128 }),
  );
  const tooLarge = refusal({ requests: huge, limits: LIMITS, msLeft: Infinity, waitSeconds: 0, rates });
  t.is(tooLarge?.kind, 'too-large');
  t.regex(tooLarge!.message, /8 encoder\(s\) x 16 image\(s\) at 128x128 is 2097152 pixels, over .*limit of 65536/);

  const slow = [request('slow', { steps: 1000 })];
  t.is(refusal({ requests: slow, limits: LIMITS, msLeft: 10_000, waitSeconds: 0, rates }), undefined, 'unmeasured');
  rates.observe('toy', 2 * 64 * 64, 0.19);
  const own = refusal({ requests: slow, limits: LIMITS, msLeft: 10_000, waitSeconds: 0, rates });
  t.is(own?.kind, 'too-slow');
  t.regex(own!.message, /needs about 190 s \(1000 steps at 190 ms measured per step\), but its deadline is 10 s away/);
  const fits = [request('small', { steps: 10 })];
  t.is(refusal({ requests: fits, limits: LIMITS, msLeft: 10_000, waitSeconds: 0, rates }), undefined);
  const behind = refusal({ requests: fits, limits: LIMITS, msLeft: 10_000, waitSeconds: 20, rates });
  t.regex(behind!.message, /after about 20 s of work queued ahead/);
  t.is(refusal({ requests: slow, limits: LIMITS, msLeft: Infinity, waitSeconds: 0, rates }), undefined, 'no deadline');
});

test('a long timer past 2^31-1 ms does not fire at once; a short one fires', async (t) => {
  let far = false;
  let near = false;
  const a = setLongTimeout(() => (far = true), 30 * 24 * 3600 * 1000);
  setLongTimeout(() => (near = true), 5);
  await sleep(40);
  t.false(far);
  t.true(near);
  a.clear();
});

test('queue: a request over its pipeline limits is refused as invalid, counted as refused', async (t) => {
  const { submit, outcomes } = setup();
  const error = t.throws(() => submit('big', [request('big', { numImages: 16, width: 128, height: 128 })]));
  t.true(error instanceof RejectedError);
  t.is((error as RejectedError).kind, 'invalid');
  t.is((await outcomes()).refused, 1);
});

test('queue: once a step was measured, a request that cannot meet its deadline is refused at once', async (t) => {
  const { pool, submit, results, outcomes } = setup();
  submit('first', [request('first')]);
  await turn();
  const b = pool.batches[0]!;
  const id = b.jobs[0]!.id;
  b.handlers.onProgress(id, 1, 10);
  await sleep(30);
  b.handlers.onProgress(id, 2, 10);
  b.finish();
  await turn();
  t.true(results.get('first')?.ok);
  // About 30 ms per step: 1000 steps need about 30 s.
  const error = t.throws(() => submit('slow', [request('slow', { steps: 1000 })], Date.now() + 2000));
  t.is((error as RejectedError).kind, 'deadline');
  t.regex(error!.message, /needs about \d+ s .*deadline is 2\.0 s away/);
  submit('quick', [request('quick', { steps: 2 })], Date.now() + 2000);
  t.like(await outcomes(), { completed: 1, refused: 1 });
});

test('queue: a queued request expires at its deadline as "deadline", and is counted as expired', async (t) => {
  const { pool, submit, results, outcomes } = setup();
  submit('running', [request('running')]);
  submit('waiting', [request('waiting', { width: 128 })], Date.now() + 30);
  await sleep(60);
  t.deepEqual(results.get('waiting'), {
    ok: false,
    kind: 'deadline',
    message: 'deadline exceeded before the images were ready',
  });
  pool.batches[0]!.finish();
  await turn();
  t.like(await outcomes(), { completed: 1, expired: 1 });
});

test('queue: a deadline 30 days away does not expire at once', async (t) => {
  const { pool, submit, results } = setup();
  submit('far', [request('far')], Date.now() + 30 * 24 * 3600 * 1000);
  await sleep(20);
  t.false(results.has('far'));
  pool.batches[0]!.finish();
  await turn();
  t.true(results.get('far')?.ok);
});

test('queue: a batch stops growing at the pixel budget', async (t) => {
  const { pool, submit } = setup();
  submit('blocker', [request('blocker', { width: 72 })]);
  await turn();
  // 6 images each: two fit 16 native images' budget with room to spare, a third does not.
  for (const id of ['a', 'b', 'c']) submit(id, [request(id, { numImages: 6 })]);
  pool.batches[0]!.finish();
  await turn();
  t.deepEqual(
    pool.batches[1]!.jobs.map((j) => j.request.prompt),
    ['a', 'b'],
  );
  pool.batches[1]!.finish();
  await turn();
  t.deepEqual(
    pool.batches[2]!.jobs.map((j) => j.request.prompt),
    ['c'],
  );
});

test('queue: no worker can start: queued requests end unavailable, new ones are refused till one runs', async (t) => {
  const { pool, submit, results } = setup();
  submit('running', [request('running')]);
  submit('queued', [request('queued', { width: 128 })]);
  await turn();
  pool.live = 0;
  pool.emit('start-failed', new Error('out of memory'));
  t.like(results.get('queued'), { ok: false, kind: 'unavailable' });
  t.regex((results.get('queued') as { message: string }).message, /no inference worker is running .*out of memory/);
  const error = t.throws(() => submit('new', [request('new')]));
  t.is((error as RejectedError).kind, 'unavailable');
  pool.live = 1;
  pool.emit('serving', true);
  t.notThrows(() => submit('later', [request('later')]));
});

test('queue: drain ends its grace early when asked (second signal)', async (t) => {
  const { queue, submit, results } = setup();
  submit('running', [request('running')]);
  await turn();
  const drained = queue.drain(60_000);
  queue.endGraceNow();
  await drained;
  t.like(results.get('running'), { ok: false, kind: 'unavailable' });
});
