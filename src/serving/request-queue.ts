/**
 * The request queue between the transports (gRPC, HTTP) and the inference workers. A request (one Generate, or one Compare =
 * one job per encoder) waits here until a worker frees up; the worker then takes the oldest request plus every
 * other queued request with the same batch key, up to `maxBatch` jobs (a Compare is never split). Every submitted
 * request ends in exactly one `done` call: images or a status.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  batchKey,
  type GeneratedImage,
  type GenerationRequest,
  type JobOutcome,
  type PreviewImage,
} from '../pipeline/engine-api.js';
import type { ServerMetrics } from './metrics.js';
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

/** The queue refused a request at submission (full queue, shutting down). */
export class RejectedError extends Error {
  constructor(
    readonly kind: 'queue-full' | 'unavailable',
    message: string,
  ) {
    super(message);
  }
}

export interface RequestQueueOptions {
  maxQueue: number;
  maxBatch: number;
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

  constructor(
    private readonly pool: WorkerPool,
    private readonly opts: RequestQueueOptions,
    private readonly metrics: ServerMetrics,
    private readonly logger: Logger,
  ) {
    super();
    pool.on('available', () => this.dispatch());
  }

  get queued(): number {
    return this.queue.length;
  }

  get active(): number {
    return this.running.size;
  }

  submit(id: string, requests: GenerationRequest[], listener: EntryListener): Handle {
    if (!this.accepting) throw new RejectedError('unavailable', 'server is shutting down');
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
    this.queue.push(entry);
    this.updateQueue();
    this.dispatchSoon();
    return { cancel: (kind, message) => this.withdraw(entry, kind, message) };
  }

  /**
   * Stop accepting; let queued and running requests finish for up to `graceMs`, then end the rest with
   * UNAVAILABLE. Resolves when every request has been settled.
   */
  async drain(graceMs: number): Promise<void> {
    this.accepting = false;
    if (!this.isIdle()) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.once('idle', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    for (const e of [...this.queue, ...this.running]) {
      this.withdraw(e, 'unavailable', 'server shut down before the request finished');
    }
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
        const flagged = imgs.filter((img) => img.safety?.flagged).length;
        if (flagged) this.metrics.imagesFlagged.labels(entry.requests[i]!.encoder).inc(flagged);
      });
    }
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
    let worker: PoolWorker | undefined;
    while (this.queue.length > 0 && (worker = this.pool.idleWorker())) {
      const batch = this.takeBatch();
      this.updateQueue();
      void this.runBatch(worker, batch);
    }
  }

  private takeBatch(): Entry[] {
    const first = this.queue.shift()!;
    const batch = [first];
    let jobs = first.requests.length;
    for (let i = 0; i < this.queue.length && jobs < this.opts.maxBatch; ) {
      const e = this.queue[i]!;
      if (e.key === first.key && jobs + e.requests.length <= this.opts.maxBatch) {
        this.queue.splice(i, 1);
        batch.push(e);
        jobs += e.requests.length;
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
        return { id, request };
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

    const outcomes = await worker.run(jobs, {
      onProgress: (id, step, total) => {
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

function jobId(entry: Entry, index: number) {
  return `${entry.id}/${index}`;
}

function entryResult(entry: Entry, outcomes: Map<string, JobOutcome>): EntryResult {
  const images: GeneratedImage[][] = [];
  for (let i = 0; i < entry.requests.length; i++) {
    const o: JobOutcome = outcomes.get(jobId(entry, i)) ?? { ok: false, failure: 'error', message: 'no outcome for job' };
    if (!o.ok) {
      if (o.failure === 'cancelled') return { ok: false, kind: 'cancelled', message: o.message || 'cancelled' };
      if (o.failure === 'invalid') return { ok: false, kind: 'invalid', message: o.message };
      return { ok: false, kind: 'internal', message: `generation failed: ${o.message}` };
    }
    images.push(o.images);
  }
  return { ok: true, images };
}
