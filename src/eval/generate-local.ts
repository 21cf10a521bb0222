/** In-process generation with the LocalEngine, jobs batched through runBatch so they share UNet calls. */
import { LocalEngine } from '../pipeline/engine.js';
import type { BatchJob } from '../pipeline/engine-api.js';
import type { Manifest } from '../pipeline/manifest.js';
import type { SessionSettings } from '../onnx/session.js';
import { jobRequest, type GenJob, type GenOutcome, type ImageGenerator, type JobSettings } from './generation.js';

export class LocalGenerator implements ImageGenerator {
  readonly where = 'in-process';
  readonly engine: LocalEngine;

  constructor(
    manifest: Manifest,
    private readonly batchSize = 8,
    session?: SessionSettings,
  ) {
    this.engine = new LocalEngine(manifest, { session });
  }

  async run(jobs: GenJob[], s: JobSettings, done: (job: GenJob, outcome: GenOutcome) => Promise<void>): Promise<void> {
    // Every job has the same pipeline, size, steps and scheduler, so any group of them can share a batch.
    for (let i = 0; i < jobs.length; i += this.batchSize) {
      const group = jobs.slice(i, i + this.batchSize);
      const batch: BatchJob[] = [];
      const invalid = new Map<string, string>();
      group.forEach((j, k) => {
        try {
          const request = this.engine.resolve(jobRequest(j, s));
          batch.push({ id: String(k), request });
        } catch (e) {
          invalid.set(String(k), (e as Error).message);
        }
      });
      const started = performance.now();
      let outcomes: Awaited<ReturnType<LocalEngine['runBatch']>>;
      try {
        outcomes = await this.engine.runBatch(batch, { onProgress: () => {}, isCancelled: () => false });
      } catch (e) {
        // A batch-wide failure (the pipeline would not load...) fails its jobs; later batches still try.
        outcomes = new Map(batch.map((b) => [b.id, { ok: false, failure: 'error', message: (e as Error).message }]));
      }
      const seconds = (performance.now() - started) / 1000 / Math.max(batch.length, 1);
      for (const [k, j] of group.entries()) {
        const id = String(k);
        const o = outcomes.get(id);
        if (invalid.has(id)) await done(j, { ok: false, message: invalid.get(id)! });
        else if (!o?.ok) await done(j, { ok: false, message: o ? o.message : 'no outcome' });
        else await done(j, { ok: true, pngs: o.images.map((im) => im.png), seconds });
      }
    }
  }

  close(): Promise<void> {
    return this.engine.close();
  }
}
