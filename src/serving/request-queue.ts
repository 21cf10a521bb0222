/**
 * The request queue between the transports (gRPC, HTTP) and the inference workers. A request (one Generate, or one
 * Compare = one job per encoder) is admitted only if it fits its pipeline's limits and, at the measured speed, can
 * finish before its deadline; it then waits here until a worker frees up; the worker takes the oldest request plus
 * every other queued request with the same batch key, up to `maxBatch` jobs and the pipeline's batch pixel budget
 * (a Compare is never split). Every submitted request ends in exactly one `done` call: images or a failure.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  batchKey,
  type GeneratedImage,
  type GenerationRequest,
  type JobOutcome,
  type PipelineLimits,
  type PreviewImage,
} from '../pipeline/engine-api.js';
import { batchPixels, refusal, StepRates, unetPixelsPerStep } from './admission.js';
import { setLongTimeout, type LongTimer } from './long-timer.js';
import type { RequestOutcome, ServerMetrics } from './metrics.js';
import type { PoolWorker, WorkerPool } from './worker-pool.js';

/**
 * Why a request ended without images. The queue knows no transport: gRPC and HTTP map each kind to their own
 * status codes at their edge.
 */
export type FailureKind =
  | 'invalid' // the request cannot be run as asked
  | 'queue-full' // refused at submission: too many waiting requests
  | 'unavailable' // refused or ended because the server is shutting down
  | 'cancelled' // withdrawn by the client
  | 'deadline' // withdrawn because its deadline passed
  | 'internal'; // generation broke

export type EntryResult = { ok: true; images: GeneratedImage[][] } | { ok: false; kind: FailureKind; message: string };

export interface EntryListener {
  queued(position: number): void;
  progress(step: number, total: number): void;
  /** A preview of `requests[index]`, where the pipeline sends them. */
  preview?(index: number, step: number, preview: PreviewImage): void;
  /** Called exactly once. `images[i]` belongs to `requests[i]`. */
  done(result: EntryResult): void;
}

/**
 * The queue refused a request at submission: full queue, shutting down or no worker running ('unavailable'), over
 * its pipeline's limits ('invalid'), or unable to finish before its deadline ('deadline').
 */
export class RejectedError extends Error {
  constructor(
    readonly kind: 'queue-full' | 'unavailable' | 'invalid' | 'deadline',
    message: string,
  ) {
    super(message);
  }
}

export interface RequestQueueOptions {
  maxQueue: number;
  maxBatch: number;
}

export interface SubmitOptions {
  /** Epoch milliseconds after which the request is withdrawn with 'deadline'; absent or Infinity: none. */
  deadline?: number;
}

interface Entry {
  id: string;
  requests: GenerationRequest[];
  key: string;
  listener: EntryListener;
  enqueuedAt: number;
  lastPosition: number;
  settled: boolean;
  worker?: PoolWorker;
  steps: number[];
  reportedStep: number;
  deadlineTimer?: LongTimer;
}

export interface Handle {
  /** Withdraw the request (client cancelled, deadline): settles it now with this status, frees its batch slot. */
  cancel(kind: 'cancelled' | 'deadline', message: string): void;
}

/** Emits 'batch' (jobCount: number) whenever a batch starts and 'idle' when nothing is queued or running. */
export class RequestQueue extends EventEmitter {
  private readonly queue: Entry[] = [];
  private readonly running = new Set<Entry>();
  private accepting = true;
  private dispatchPending = false;
  /** Set while no worker runs and restarting failed: the reason new requests are refused. */
  private down: string | undefined;
  private endGrace: (() => void) | undefined;
  /** Measured seconds per UNet pixel per step of each pipeline, for admission. */
  readonly rates = new StepRates();

  constructor(
    private readonly pool: WorkerPool,
    private readonly opts: RequestQueueOptions,
    private readonly metrics: ServerMetrics,
    private readonly logger: Logger,
  ) {
    super();
    pool.on('available', () => this.dispatch());
    pool.on('serving', (serving: boolean) => {
      if (serving) this.down = undefined;
    });
    pool.on('start-failed', (e: Error) => {
      if (pool.live > 0) return;
      this.down = `no inference worker is running (restarting failed: ${e.message}); retry later`;
      for (const entry of [...this.queue]) this.withdraw(entry, 'unavailable', this.down);
    });
  }

  get queued(): number {
    return this.queue.length;
  }

  get active(): number {
    return this.running.size;
  }

  /** Queue requests (all of one pipeline, one batch key); throws RejectedError when they may not enter. */
  submit(id: string, requests: GenerationRequest[], listener: EntryListener, opts: SubmitOptions = {}): Handle {
    try {
      return this.admit(id, requests, listener, opts.deadline ?? Infinity);
    } catch (e) {
      if (e instanceof RejectedError) this.metrics.requests.labels('refused').inc();
      throw e;
    }
  }

  private admit(id: string, requests: GenerationRequest[], listener: EntryListener, deadline: number): Handle {
    if (!this.accepting) throw new RejectedError('unavailable', 'server is shutting down');
    if (this.down) throw new RejectedError('unavailable', this.down);
    const refused = refusal({
      requests,
      limits: this.limits(requests[0]!.pipeline),
      msLeft: deadline - Date.now(),
      waitSeconds: this.backlogSeconds(),
      rates: this.rates,
    });
    if (refused) throw new RejectedError(refused.kind === 'too-large' ? 'invalid' : 'deadline', refused.message);
    if (this.queue.length >= this.opts.maxQueue) {
      throw new RejectedError(
        'queue-full',
        `queue is full (limit ${this.opts.maxQueue} waiting requests); retry later`,
      );
    }
    const entry: Entry = {
      id,
      requests,
      key: batchKey(requests[0]!),
      listener,
      enqueuedAt: performance.now(),
      lastPosition: -1,
      settled: false,
      steps: requests.map(() => 0),
      reportedStep: 0,
    };
    if (Number.isFinite(deadline)) {
      entry.deadlineTimer = setLongTimeout(
        () => this.withdraw(entry, 'deadline', 'deadline exceeded before the images were ready'),
        deadline - Date.now(),
      );
    }
    this.queue.push(entry);
    this.updateQueue();
    this.dispatchSoon();
    return { cancel: (kind, message) => this.withdraw(entry, kind, message) };
  }

  private limits(pipeline: string): PipelineLimits {
    const p = this.pool.models.pipelines.find((x) => x.name === pipeline);
    return p?.limits ?? { maxPixels: Infinity, maxBatchPixels: Infinity };
  }

  /** Estimated seconds of work ahead of a new request, per live worker (unmeasured pipelines count nothing). */
  backlogSeconds(): number {
    let sum = 0;
    for (const e of this.queue) sum += this.rates.seconds(e.requests) ?? 0;
    for (const e of this.running) sum += this.rates.seconds(e.requests, e.requests[0]!.steps - e.reportedStep) ?? 0;
    return sum / Math.max(1, this.pool.live);
  }

  /**
   * Stop accepting; let queued and running requests finish for up to `graceMs`, then end the rest with
   * UNAVAILABLE. Resolves when every request has been settled.
   */
  async drain(graceMs: number): Promise<void> {
    this.accepting = false;
    if (!this.isIdle()) {
      await new Promise<void>((resolve) => {
        const timer = setLongTimeout(() => this.endGrace?.(), graceMs);
        this.endGrace = () => {
          timer.clear();
          this.off('idle', this.endGrace!);
          resolve();
        };
        this.once('idle', this.endGrace);
      });
    }
    for (const e of [...this.queue, ...this.running]) {
      this.withdraw(e, 'unavailable', 'server shut down before the request finished');
    }
  }

  /** End a drain's grace now (a second signal): what is still queued or running ends with 'unavailable'. */
  endGraceNow(): void {
    this.endGrace?.();
  }

  private isIdle() {
    return this.queue.length === 0 && this.running.size === 0;
  }

  private withdraw(entry: Entry, kind: FailureKind, message: string) {
    if (entry.settled) return;
    const queuedAt = this.queue.indexOf(entry);
    if (queuedAt >= 0) {
      this.queue.splice(queuedAt, 1);
      this.updateQueue();
    } else if (entry.worker) {
      for (let i = 0; i < entry.requests.length; i++) entry.worker.cancel(jobId(entry, i));
      this.running.delete(entry);
    }
    this.settle(entry, { ok: false, kind, message });
  }

  private settle(entry: Entry, result: EntryResult) {
    if (entry.settled) return;
    entry.settled = true;
    if (result.ok) {
      result.images.forEach((imgs, i) => {
        const encoder = entry.requests[i]!.encoder;
        this.metrics.imagesGenerated.labels(encoder).inc(imgs.length);
        const flagged = imgs.filter((img) => img.safety?.flagged).length;
        if (flagged) this.metrics.imagesFlagged.labels(encoder).inc(flagged);
      });
    }
    entry.deadlineTimer?.clear();
    this.metrics.requests.labels(outcomeOf(result)).inc();
    entry.listener.done(result);
    if (this.isIdle()) this.emit('idle');
  }

  private updateQueue() {
    this.metrics.queueDepth.set(this.queue.length);
    this.queue.forEach((e, position) => {
      if (e.lastPosition === position) return;
      e.lastPosition = position;
      e.listener.queued(position);
    });
  }

  /**
   * Dispatch once the event loop has handled the I/O already received: requests that arrive together (concurrent
   * calls of one client come in one read) then start as one batch instead of the first alone and the rest after it.
   * Nothing waits on a timer, so a lone request loses only that turn of the loop.
   */
  private dispatchSoon() {
    if (this.dispatchPending) return;
    this.dispatchPending = true;
    setImmediate(() => {
      this.dispatchPending = false;
      this.dispatch();
    });
  }

  private dispatch() {
    while (this.queue.length > 0) {
      const worker = this.pool.idleWorker() ?? this.workerToOvertake(this.queue[0]!);
      if (!worker) return;
      const batch = this.takeBatch();
      this.updateQueue();
      void this.runBatch(worker, batch);
    }
  }

  /**
   * A worker whose one batch has far more work left than the oldest queued request: that request then runs beside
   * it and steps first (step-gate.ts), so one long request does not hold up short ones for its whole run.
   */
  private workerToOvertake(head: Entry): PoolWorker | undefined {
    const work = unetPixelsPerStep(head.requests) * head.requests[0]!.steps;
    return this.pool.sharableWorkers().find((w) => this.workLeftOn(w) > OVERTAKE_FACTOR * work);
  }

  /** UNet pixels × steps still to run on a worker. */
  private workLeftOn(worker: PoolWorker): number {
    let sum = 0;
    for (const e of this.running) {
      if (e.worker === worker) sum += unetPixelsPerStep(e.requests) * (e.requests[0]!.steps - e.reportedStep);
    }
    return sum;
  }

  /** The oldest request and what may share its UNet calls, within `maxBatch` jobs and the batch pixel budget. */
  private takeBatch(): Entry[] {
    const first = this.queue.shift()!;
    const batch = [first];
    let jobs = first.requests.length;
    let pixels = batchPixels(first.requests);
    const budget = this.limits(first.requests[0]!.pipeline).maxBatchPixels;
    for (let i = 0; i < this.queue.length && jobs < this.opts.maxBatch; ) {
      const e = this.queue[i]!;
      const more = batchPixels(e.requests);
      if (e.key === first.key && jobs + e.requests.length <= this.opts.maxBatch && pixels + more <= budget) {
        this.queue.splice(i, 1);
        batch.push(e);
        jobs += e.requests.length;
        pixels += more;
      } else i++;
    }
    return batch;
  }

  private async runBatch(worker: PoolWorker, batch: Entry[]) {
    const byJob = new Map<string, { entry: Entry; index: number }>();
    const jobs = batch.flatMap((entry) =>
      entry.requests.map((request, index) => {
        const id = jobId(entry, index);
        byJob.set(id, { entry, index });
        return { id, request, previews: entry.listener.preview !== undefined };
      }),
    );
    const started = performance.now();
    for (const entry of batch) {
      entry.worker = worker;
      this.running.add(entry);
      this.metrics.queueWait.observe((started - entry.enqueuedAt) / 1000);
    }
    this.metrics.batchSize.observe(jobs.length);
    this.emit('batch', jobs.length);
    this.logger.debug({ worker: worker.index, jobs: jobs.length, requests: batch.map((e) => e.id) }, 'batch started');

    // Step timing for admission: from the end of step 1 on (step 1 includes text encoding and model loading).
    let batchStep = 0;
    let stepEndedAt = 0;
    const pipeline = jobs[0]!.request.pipeline;
    const outcomes = await worker.run(jobs, {
      onProgress: (id, step, total) => {
        if (step > batchStep) {
          const now = performance.now();
          const live = batch.filter((e) => !e.settled).flatMap((e) => e.requests);
          // Only while the worker runs this batch alone: an interleaved one's steps would count as this one's.
          if (batchStep >= 1 && live.length > 0 && worker.batches === 1) {
            this.rates.observe(pipeline, unetPixelsPerStep(live), (now - stepEndedAt) / 1000 / (step - batchStep));
          }
          batchStep = step;
          stepEndedAt = now;
        }
        const owner = byJob.get(id);
        if (!owner || owner.entry.settled) return;
        const { entry, index } = owner;
        entry.steps[index] = step;
        // A Compare's jobs step together; report the slowest so the bar never runs ahead.
        const slowest = Math.min(...entry.steps);
        if (slowest > entry.reportedStep) {
          entry.reportedStep = slowest;
          entry.listener.progress(slowest, total);
        }
      },
      onPreview: (id, step, preview) => {
        const owner = byJob.get(id);
        if (owner && !owner.entry.settled) owner.entry.listener.preview?.(owner.index, step, preview);
      },
    });

    for (const entry of batch) {
      this.running.delete(entry);
      this.settle(entry, entryResult(entry, outcomes));
    }
    this.logger.debug(
      { worker: worker.index, jobs: jobs.length, ms: Math.round(performance.now() - started) },
      'batch finished',
    );
    this.dispatch();
    if (this.isIdle()) this.emit('idle');
  }
}

/** How much more work a running batch must have left before a queued request may overtake it. */
const OVERTAKE_FACTOR = 4;

function outcomeOf(result: EntryResult): RequestOutcome {
  if (result.ok) return 'completed';
  if (result.kind === 'cancelled') return 'cancelled';
  if (result.kind === 'deadline') return 'expired';
  return 'failed';
}

function jobId(entry: Entry, index: number) {
  return `${entry.id}/${index}`;
}

function entryResult(entry: Entry, outcomes: Map<string, JobOutcome>): EntryResult {
  const images: GeneratedImage[][] = [];
  for (let i = 0; i < entry.requests.length; i++) {
    const o: JobOutcome = outcomes.get(jobId(entry, i)) ?? {
      ok: false,
      failure: 'error',
      message: 'no outcome for job',
    };
    if (!o.ok) {
      if (o.failure === 'cancelled') return { ok: false, kind: 'cancelled', message: o.message || 'cancelled' };
      if (o.failure === 'invalid') return { ok: false, kind: 'invalid', message: o.message };
      return { ok: false, kind: 'internal', message: `generation failed: ${o.message}` };
    }
    images.push(o.images);
  }
  return { ok: true, images };
}
