/**
 * Main-thread side of the inference workers: starts them (TypeScript via tsx), hands each a batch (or a second one
 * that interleaves with it step by step, see step-gate.ts), relays progress, and replaces a worker that crashed,
 * exited or stopped reporting: its batches fail, a fresh worker starts (retried with backoff while starting fails),
 * and a dying worker is never handed another batch.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { BatchJob, JobOutcome, ModelsInfo, PreviewImage } from '../pipeline/engine-api.js';
import type { FromWorker, ToWorker, WorkerInit } from './worker-protocol.js';

/** The production engine; tests point `engineModule` at a fake with the same `createEngine` export. */
export const DEFAULT_ENGINE_MODULE = fileURLToPath(new URL('../pipeline/engine.ts', import.meta.url));

const WORKER_URL = new URL('./worker.ts', import.meta.url).href;
// `--import tsx` in a worker's execArgv does not reach its entry module on Node 20, so a small bootstrap registers
// tsx inside the worker and then imports the TypeScript entry.
const BOOTSTRAP = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})
  .then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL)}); });`;

export interface BatchHandlers {
  onProgress(jobId: string, step: number, total: number): void;
  onPreview?(jobId: string, step: number, preview: PreviewImage): void;
}

interface RunningBatch {
  id: number;
  jobs: BatchJob[];
  flags: Int32Array;
  handlers: BatchHandlers;
  resolve(outcomes: Map<string, JobOutcome>): void;
}

/** Batches one worker runs at once: one long, one short that overtakes it. */
export const MAX_BATCHES_PER_WORKER = 2;

export class PoolWorker {
  private readonly running = new Map<number, RunningBatch>();
  private nextBatchId = 1;
  private closing = false;
  /** Crashed, exited or abandoned: takes no batch, whatever it still does. */
  private dead = false;
  /** performance.now() of the last message from the thread. */
  lastHeard = performance.now();

  private constructor(
    readonly index: number,
    private readonly worker: Worker,
    private readonly onDeath: (w: PoolWorker, reason: string) => void,
  ) {
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    // An uncaught exception ends the thread: 'error' comes first, 'exit' after it. From 'error' on it is dead.
    worker.on('error', (e) => this.die(`inference worker ${index} crashed: ${e.message}`));
    worker.on('exit', (code) => {
      if (!this.closing) this.die(`inference worker ${index} exited with code ${code}`);
    });
  }

  static start(index: number, init: WorkerInit, onDeath: (w: PoolWorker, reason: string) => void) {
    const worker = new Worker(BOOTSTRAP, { eval: true, workerData: init });
    return new Promise<{ worker: PoolWorker; models: ModelsInfo }>((resolve, reject) => {
      const early = (e: Error | number) => {
        reject(
          new Error(`inference worker ${index} failed to start: ${typeof e === 'number' ? `exit ${e}` : e.message}`),
        );
      };
      worker.once('error', early);
      worker.once('exit', early);
      worker.once('message', (m: FromWorker) => {
        worker.off('error', early);
        worker.off('exit', early);
        if (m.type === 'ready') resolve({ worker: new PoolWorker(index, worker, onDeath), models: m.models });
        else {
          void worker.terminate();
          reject(
            new Error(`inference worker ${index} failed to start: ${m.type === 'init-failed' ? m.message : m.type}`),
          );
        }
      });
    });
  }

  /** Running a batch, or dead. */
  get busy(): boolean {
    return this.dead || this.running.size > 0;
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** Batches in flight. */
  get batches(): number {
    return this.running.size;
  }

  /** Run a batch; never rejects: a crash or engine error becomes a failed outcome for every job. */
  run(jobs: BatchJob[], handlers: BatchHandlers): Promise<Map<string, JobOutcome>> {
    if (this.dead || this.running.size >= MAX_BATCHES_PER_WORKER) {
      throw new Error(`inference worker ${this.index} is ${this.dead ? 'dead' : 'full'}`);
    }
    const cancelFlags = new SharedArrayBuffer(4 * jobs.length);
    if (this.running.size === 0) this.lastHeard = performance.now();
    return new Promise((resolve) => {
      const batch = { id: this.nextBatchId++, jobs, flags: new Int32Array(cancelFlags), handlers, resolve };
      this.running.set(batch.id, batch);
      this.post({ type: 'run-batch', batchId: batch.id, jobs, cancelFlags });
    });
  }

  /** Ask the engine to drop a job before its next UNet call. */
  cancel(jobId: string): void {
    for (const b of this.running.values()) {
      const i = b.jobs.findIndex((j) => j.id === jobId);
      if (i >= 0) Atomics.store(b.flags, i, 1);
    }
  }

  /**
   * Give up on a worker that stopped reporting: its batch fails now and it takes no more. The thread is not
   * terminated (a thread ended inside onnxruntime aborts the process); it is asked to close once its call returns.
   */
  abandon(reason: string): void {
    if (this.dead) return;
    for (const b of this.running.values()) for (let i = 0; i < b.flags.length; i++) Atomics.store(b.flags, i, 1);
    this.die(reason);
    this.closing = true;
    this.worker.unref();
    this.post({ type: 'close' });
  }

  /**
   * Close after the batch in flight (cancelled by the caller, so it returns within one UNet call). Terminates the
   * thread only once it has closed, or after `timeoutMs` when it is stuck.
   */
  async close(timeoutMs = 5000): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => {
      this.worker.on('message', (m: FromWorker) => m.type === 'closed' && resolve());
      this.worker.once('exit', () => resolve());
    });
    this.post({ type: 'close' });
    await Promise.race([closed, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
    await this.worker.terminate();
  }

  private post(m: ToWorker) {
    try {
      this.worker.postMessage(m);
    } catch {
      // The thread is gone; its 'exit' handler settles what was running.
    }
  }

  private onMessage(m: FromWorker) {
    this.lastHeard = performance.now();
    if (m.type !== 'progress' && m.type !== 'preview' && m.type !== 'batch-done' && m.type !== 'batch-failed') return;
    const b = this.running.get(m.batchId);
    if (!b) return;
    if (m.type === 'progress') b.handlers.onProgress(m.jobId, m.step, m.total);
    else if (m.type === 'preview') b.handlers.onPreview?.(m.jobId, m.step, m.preview);
    else {
      this.running.delete(b.id);
      b.resolve(m.type === 'batch-done' ? new Map(m.outcomes) : failAll(b.jobs, m.message));
    }
  }

  private die(reason: string) {
    if (this.dead) return;
    this.dead = true;
    const batches = [...this.running.values()];
    this.running.clear();
    for (const b of batches) b.resolve(failAll(b.jobs, reason));
    this.onDeath(this, reason);
  }
}

function failAll(jobs: BatchJob[], message: string): Map<string, JobOutcome> {
  return new Map(jobs.map((j) => [j.id, { ok: false, failure: 'error', message } as JobOutcome]));
}

export interface WorkerPoolOptions {
  size: number;
  engineModule?: string;
  engineOptions: Record<string, unknown>;
  logger: Logger;
  /** A worker that reports nothing for this long while running a batch is abandoned and replaced (default 300 s). */
  stallMs?: number;
  /** Delay before the second start attempt of a worker; doubles per failure up to `maxRestartDelayMs`. */
  restartDelayMs?: number;
  maxRestartDelayMs?: number;
}

/**
 * Emits 'available' whenever a worker can take a batch (freed, or replaced after a death), 'serving' (boolean)
 * when whether any worker can run changes, and 'start-failed' (Error) when a replacement failed to start.
 */
export class WorkerPool extends EventEmitter {
  private closed = false;
  private readonly watchdog: NodeJS.Timeout;
  private readonly abandoned = new Set<PoolWorker>();

  private constructor(
    private readonly workers: PoolWorker[],
    readonly models: ModelsInfo,
    private readonly init: WorkerInit,
    private readonly opts: WorkerPoolOptions,
  ) {
    super();
    const stallMs = opts.stallMs ?? 300_000;
    this.watchdog = setInterval(() => this.checkStalls(stallMs), Math.min(1000, stallMs / 4)).unref();
  }

  static async start(opts: WorkerPoolOptions): Promise<WorkerPool> {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new Error(`workers must be at least 1, got ${opts.size}`);
    const init: WorkerInit = {
      engineModule: opts.engineModule ?? DEFAULT_ENGINE_MODULE,
      engineOptions: opts.engineOptions,
    };
    let pool: WorkerPool | undefined;
    const onDeath = (w: PoolWorker, reason: string) => pool?.replace(w, reason);
    const started = await Promise.allSettled(
      Array.from({ length: opts.size }, (_, i) => PoolWorker.start(i, init, onDeath)),
    );
    const failed = started.find((s) => s.status === 'rejected');
    const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    if (failed) {
      await Promise.all(ok.map((s) => s.worker.close(1000)));
      throw (failed as PromiseRejectedResult).reason;
    }
    pool = new WorkerPool(
      ok.map((s) => s.worker),
      ok[0]!.models,
      init,
      opts,
    );
    return pool;
  }

  get size(): number {
    return this.workers.length;
  }

  /** Workers that can take batches now. */
  get live(): number {
    return this.workers.filter((w) => w.alive).length;
  }

  idleWorker(): PoolWorker | undefined {
    return this.closed ? undefined : this.workers.find((w) => !w.busy);
  }

  /** Live workers running one batch that could take a second, interleaved with it. */
  sharableWorkers(): PoolWorker[] {
    return this.closed
      ? []
      : this.workers.filter((w) => w.alive && w.batches > 0 && w.batches < MAX_BATCHES_PER_WORKER);
  }

  /** Close every worker after its batch in flight; `timeoutMs` bounds the wait for each. */
  async close(timeoutMs?: number): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    // An abandoned worker already had its stall limit to return: it gets a second more, then is terminated.
    await Promise.all([
      ...this.workers.filter((w) => !this.abandoned.has(w)).map((w) => w.close(timeoutMs)),
      ...[...this.abandoned].map((w) => w.close(1000)),
    ]);
  }

  private checkStalls(stallMs: number) {
    const now = performance.now();
    for (const w of this.workers) {
      if (w.alive && w.batches > 0 && now - w.lastHeard > stallMs) {
        this.abandoned.add(w);
        w.abandon(`inference worker ${w.index} reported nothing for ${Math.round(stallMs / 1000)} s; replaced`);
      }
    }
  }

  private replace(dead: PoolWorker, reason: string) {
    if (this.closed) return;
    this.opts.logger.error({ worker: dead.index, reason }, 'inference worker died; starting a new one');
    if (this.live === 0) this.emit('serving', false);
    const slot = this.workers.indexOf(dead);
    const base = this.opts.restartDelayMs ?? 250;
    const attempt = (n: number) => {
      if (this.closed) return;
      PoolWorker.start(dead.index, this.init, (w, r) => this.replace(w, r)).then(
        ({ worker }) => {
          if (this.closed) return void worker.close(1000);
          const wasServing = this.live > 0;
          this.workers[slot] = worker;
          this.opts.logger.info({ worker: dead.index, attempt: n + 1 }, 'inference worker restarted');
          if (!wasServing) this.emit('serving', true);
          this.emit('available');
        },
        (e: Error) => {
          const delay = Math.min(this.opts.maxRestartDelayMs ?? 30_000, base * 2 ** n);
          this.opts.logger.error(
            { worker: dead.index, err: e.message, retryMs: delay },
            'could not restart inference worker',
          );
          this.emit('start-failed', e);
          setTimeout(() => attempt(n + 1), delay).unref();
        },
      );
    };
    attempt(0);
  }
}
