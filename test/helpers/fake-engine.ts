/**
 * A stand-in for src/pipeline/engine.ts with the same `createEngine` export, for server tests: deterministic PNGs
 * from seed + encoder + prompt, a configurable per-step delay that blocks the thread (as onnxruntime's run does),
 * cancellation checked between steps, progress after every step.
 *
 * Options (createEngine's argument, or env for child processes): stepMs (FAKE_ENGINE_STEP_MS, default 5);
 * counters: a SharedArrayBuffer of Int32s the test reads: [0] steps executed (one per job per step),
 * [1] batches run, [2] largest batch.
 * Prompts containing "engine-reject" fail the engine's resolve; "engine-fail" fail inside runBatch;
 * "engine-crash" ends the worker thread; "engine-throw" throws an uncaught exception in it during the batch;
 * "engine-hang" blocks it for good. `failStarts` (an Int32 in shared memory): while above 0, createEngine fails and
 * decrements it (a worker that cannot restart).
 */
import { deflateSync, crc32 } from 'node:zlib';
import { resolveRequest } from '../../src/pipeline/request.js';
import {
  InvalidRequestError,
  type BatchJob,
  type Engine,
  type EngineHooks,
  type GenerationRequest,
  type JobOutcome,
  type ModelsInfo,
  type PartialRequest,
} from '../../src/pipeline/engine-api.js';

export const STEPS_EXECUTED = 0;
export const BATCHES_RUN = 1;
export const LARGEST_BATCH = 2;

export interface FakeEngineOptions {
  manifest?: string;
  stepMs?: number;
  counters?: SharedArrayBuffer;
  failStarts?: SharedArrayBuffer;
}

const MODELS: ModelsInfo = {
  defaultPipeline: 'toy',
  pipelines: [
    {
      name: 'toy',
      defaultEncoder: 'clip',
      defaultWidth: 32,
      defaultHeight: 32,
      defaultSteps: 4,
      defaultGuidanceScale: 7.5,
      defaultScheduler: 'ddim',
      crossAttentionDim: 32,
      // 4x and 16x the native 32x32, as pipelineLimits() would give.
      limits: { maxPixels: 4096, maxBatchPixels: 16384 },
    },
  ],
  encoders: [
    { name: 'clip', pipeline: 'toy', hiddenSize: 32, source: 'text_encoder', safeClip: false, layers: 2 },
    { name: 'safe-clip', pipeline: 'toy', hiddenSize: 32, source: 'safe_clip', safeClip: true, layers: 2 },
  ],
};

export async function createEngine(opts: FakeEngineOptions = {}): Promise<Engine> {
  const stepMs = opts.stepMs ?? Number(process.env.FAKE_ENGINE_STEP_MS ?? 5);
  const counters = new Int32Array(opts.counters ?? new SharedArrayBuffer(12));
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  if (opts.failStarts && Atomics.sub(new Int32Array(opts.failStarts), 0, 1) > 0) {
    throw new Error('fake engine: start failure injected');
  }

  return {
    models: () => MODELS,
    resolve(r: PartialRequest): GenerationRequest {
      if (r.prompt.includes('engine-reject')) throw new InvalidRequestError('prompt rejected by the fake engine');
      return resolveRequest(MODELS, r);
    },
    async runBatch(jobs: BatchJob[], hooks: EngineHooks) {
      Atomics.add(counters, BATCHES_RUN, 1);
      if (jobs.length > Atomics.load(counters, LARGEST_BATCH)) Atomics.store(counters, LARGEST_BATCH, jobs.length);
      const has = (word: string) => jobs.some((j) => j.request.prompt.includes(word));
      if (has('engine-crash')) process.exit(3);
      if (has('engine-hang')) Atomics.wait(sleeper, 0, 0);
      if (has('engine-throw')) {
        setImmediate(() => {
          throw new Error('fake uncaught exception');
        });
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const outcomes = new Map<string, JobOutcome>();
      let live = jobs;
      const total = jobs[0]!.request.steps;
      for (let step = 1; step <= total && live.length > 0; step++) {
        await hooks.yieldBetweenSteps?.();
        // Blocks like a UNet call: no event-loop turn, so only shared-memory cancellation can reach us.
        Atomics.wait(sleeper, 0, 0, stepMs);
        for (const j of live) {
          Atomics.add(counters, STEPS_EXECUTED, 1);
          hooks.onProgress(j.id, step, total);
        }
        live = live.filter((j) => {
          if (!hooks.isCancelled(j.id)) return true;
          outcomes.set(j.id, { ok: false, failure: 'cancelled', message: 'cancelled' });
          return false;
        });
      }
      for (const j of live) {
        outcomes.set(
          j.id,
          j.request.prompt.includes('engine-fail')
            ? { ok: false, failure: 'error', message: 'fake engine failure' }
            : { ok: true, images: fakeImages(j.request) },
        );
      }
      return outcomes;
    },
    async close() {},
  };
}

function fakeImages(r: GenerationRequest) {
  return Array.from({ length: r.numImages }, (_, i) => ({
    png: fakePng(`${r.seed}|${r.encoder}|${r.prompt}|${i}`, r.width, r.height),
    seed: r.seed + BigInt(i),
    width: r.width,
    height: r.height,
    encoder: r.encoder,
    scheduler: r.scheduler,
    steps: r.steps,
    guidanceScale: r.guidanceScale,
    pipeline: r.pipeline,
  }));
}

/** An RGB PNG filled with xorshift noise seeded from `key`. */
function fakePng(key: string, width: number, height: number): Uint8Array {
  let state = crc32(key) || 1;
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width * 3; x++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      raw[y * (width * 3 + 1) + 1 + x] = state & 0xff;
    }
  }
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
