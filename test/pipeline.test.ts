import test from 'ava';
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalEngine } from '../src/pipeline/engine.js';
import { manifestForModel } from '../src/pipeline/manifest.js';
import { fixture } from './fixtures.js';
import { goldenRunError, PIPELINE_TOL, runs, writeGoldenScheduler } from './helpers/pipeline-golden.js';

process.env.SAFE_SD_CACHE ??= mkdtempSync(join(tmpdir(), 'graph-cache-'));

// The reference built each scheduler from the config recorded in the golden (which leaves timestep_spacing to each
// class's default), not from tiny-sd's scheduler_config.json (which says 'leading'): run with that config too.
const model = mkdtempSync(join(tmpdir(), 'tiny-sd-'));
cpSync(fixture('tiny-sd'), model, { recursive: true });
writeGoldenScheduler(model);
const engine = new LocalEngine(manifestForModel(model));
test.after.always(() => engine.close());

for (const run of runs) {
  test(`${run.name}: images equal diffusers' from the recorded latents`, async (t) => {
    const err = await goldenRunError(t, engine, run);
    t.true(err < PIPELINE_TOL, `max abs error ${err}`);
  });
}
