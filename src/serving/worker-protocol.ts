/** Messages between the main thread (worker-pool.ts) and an inference worker (worker.ts). */
import type { BatchJob, JobOutcome, ModelsInfo, PreviewImage } from '../pipeline/engine-api.js';

export interface WorkerInit {
  /** Absolute path or file URL of a module exporting `createEngine(options): Promise<Engine>`. */
  engineModule: string;
  /** Passed to createEngine unchanged (structured-cloned; SharedArrayBuffers stay shared). */
  engineOptions: Record<string, unknown>;
}

export type ToWorker =
  /**
   * `cancelFlags` holds one Int32 per job, in `jobs` order; the main thread sets it to 1 to cancel. Shared memory,
   * because the engine checks it between steps while onnxruntime keeps this thread's event loop blocked.
   */
  { type: 'run-batch'; batchId: number; jobs: BatchJob[]; cancelFlags: SharedArrayBuffer } | { type: 'close' };

export type FromWorker =
  | { type: 'ready'; models: ModelsInfo }
  | { type: 'init-failed'; message: string }
  | { type: 'progress'; batchId: number; jobId: string; step: number; total: number }
  | { type: 'preview'; batchId: number; jobId: string; step: number; preview: PreviewImage }
  | { type: 'batch-done'; batchId: number; outcomes: Array<[string, JobOutcome]> }
  | { type: 'batch-failed'; batchId: number; message: string }
  | { type: 'closed' };
