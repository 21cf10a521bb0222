/**
 * Main-thread side of the inference workers: starts them (TypeScript via tsx), hands each a batch at a time,
 * relays progress, and turns a crashed worker into failed outcomes plus a fresh worker.
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

export class PoolWorker {
  private running: RunningBatch | undefined;
  private nextBatchId = 1;
  private closing = false;
  private exited = false;

  private constructor(
    readonly index: number,
    private readonly worker: Worker,
    private readonly onExit: (w: PoolWorker, reason: string) => void,
  ) {
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (e) => this.fail(`inference worker ${index} crashed: ${e.message}`));
    worker.on('exit', (code) => {
      this.exited = true;
      if (this.closing) return;
      this.fail(`inference worker ${index} exited with code ${code}`);
      this.onExit(this, `exit code ${code}`);
    });
  }

  static start(index: number, init: WorkerInit, onExit: (w: PoolWorker, reason: string) => void) {
    const worker = new Worker(BOOTSTRAP, { eval: true, workerData: init });
    return new Promise<{ worker: PoolWorker; models: ModelsInfo }>((resolve, reject) => {
      const early = (e: Error | number) => {
        reject(new Error(`inference worker ${index} failed to start: ${typeof e === 'number' ? `exit ${e}` : e.message}`));
      };
      worker.once('error', early);
      worker.once('exit', early);
      worker.once('message', (m: FromWorker) => {
        worker.off('error', early);
        worker.off('exit', early);
        if (m.type === 'ready') resolve({ worker: new PoolWorker(index, worker, onExit), models: m.models });
        else {
          void worker.terminate();
          reject(new Error(`inference worker ${index} failed to start: ${m.type === 'init-failed' ? m.message : m.type}`));
        }
      });
    });
  }

  /** Busy while running a batch; a worker that exited stays busy until the pool replaces it. */
  get busy(): boolean {
    return this.exited || this.running !== undefined;
  }

  /** Run one batch; never rejects: a crash or engine error becomes a failed outcome for every job. */
  run(jobs: BatchJob[], handlers: BatchHandlers): Promise<Map<string, JobOutcome>> {
    if (this.running) throw new Error(`inference worker ${this.index} is busy`);
    const cancelFlags = new SharedArrayBuffer(4 * jobs.length);
    return new Promise((resolve) => {
      this.running = { id: this.nextBatchId++, jobs, flags: new Int32Array(cancelFlags), handlers, resolve };
      this.post({ type: 'run-batch', batchId: this.running.id, jobs, cancelFlags });
    });
  }

  /** Ask the engine to drop a job at its next step check. */
  cancel(jobId: string): void {
    const b = this.running;
    const i = b?.jobs.findIndex((j) => j.id === jobId) ?? -1;
    if (b && i >= 0) Atomics.store(b.flags, i, 1);
  }

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
    this.worker.postMessage(m);
  }

  private onMessage(m: FromWorker) {
    const b = this.running;
    if (m.type === 'progress') {
      if (b && b.id === m.batchId) b.handlers.onProgress(m.jobId, m.step, m.total);
    } else if (m.type === 'preview') {
      if (b && b.id === m.batchId) b.handlers.onPreview?.(m.jobId, m.step, m.preview);
    } else if (m.type === 'batch-done' || m.type === 'batch-failed') {
      if (!b || b.id !== m.batchId) return;
      this.running = undefined;
      b.resolve(m.type === 'batch-done' ? new Map(m.outcomes) : failAll(b.jobs, m.message));
    }
  }

  private fail(message: string) {
    const b = this.running;
    if (!b) return;
    this.running = undefined;
    b.resolve(failAll(b.jobs, message));
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
}

/** Emits 'available' whenever a worker becomes free (or is replaced after a crash). */
export class WorkerPool extends EventEmitter {
  private closed = false;

  private constructor(
    private readonly workers: PoolWorker[],
    readonly models: ModelsInfo,
    private readonly init: WorkerInit,
    private readonly logger: Logger,
  ) {
    super();
  }

  static async start(opts: WorkerPoolOptions): Promise<WorkerPool> {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new Error(`workers must be at least 1, got ${opts.size}`);
    const init: WorkerInit = {
      engineModule: opts.engineModule ?? DEFAULT_ENGINE_MODULE,
      engineOptions: opts.engineOptions,
    };
    let pool: WorkerPool | undefined;
    const onExit = (w: PoolWorker, reason: string) => pool?.replace(w, reason);
    const started = await Promise.allSettled(
      Array.from({ length: opts.size }, (_, i) => PoolWorker.start(i, init, onExit)),
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
      opts.logger,
    );
    return pool;
  }

  get size(): number {
    return this.workers.length;
  }

  idleWorker(): PoolWorker | undefined {
    return this.closed ? undefined : this.workers.find((w) => !w.busy);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.close()));
  }

  private replace(dead: PoolWorker, reason: string) {
    if (this.closed) return;
    this.logger.error({ worker: dead.index, reason }, 'inference worker died; starting a new one');
    const slot = this.workers.indexOf(dead);
    PoolWorker.start(dead.index, this.init, (w, r) => this.replace(w, r)).then(
      ({ worker }) => {
        if (this.closed) return void worker.close(1000);
        this.workers[slot] = worker;
        this.emit('available');
      },
      (e: Error) => this.logger.error({ worker: dead.index, err: e.message }, 'could not restart inference worker'),
    );
  }
}
