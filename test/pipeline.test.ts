import test from 'ava';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalEngine } from '../src/pipeline/engine.js';
import { manifestForModel } from '../src/pipeline/manifest.js';
import { readSafetensors } from '../src/models/safetensors.js';
import type { F32Tensor } from '../src/models/tensor.js';
import { fixture } from './fixtures.js';
import goldenSpec from './fixtures/reference/pipeline_golden.json' with { type: 'json' };

process.env.SAFE_SD_CACHE ??= mkdtempSync(join(tmpdir(), 'graph-cache-'));

const golden = readSafetensors(fixture('pipeline_golden.safetensors')) as Map<string, F32Tensor>;

// The reference built each scheduler from the config recorded in the golden (which leaves timestep_spacing to each
// class's default), not from tiny-sd's scheduler_config.json (which says 'leading'): run with that config too.
const model = mkdtempSync(join(tmpdir(), 'tiny-sd-'));
cpSync(fixture('tiny-sd'), model, { recursive: true });
writeFileSync(join(model, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: 'PNDMScheduler', ...goldenSpec.scheduler_config }));
const engine = new LocalEngine(manifestForModel(model));
test.after.always(() => engine.close());

const SCHEDULER: Record<string, string> = {
  PNDMScheduler: 'pndm',
  EulerDiscreteScheduler: 'euler',
  DPMSolverMultistepScheduler: 'dpmpp-2m',
  DDIMScheduler: 'ddim',
};

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

for (const run of goldenSpec.runs) {
  test(`${run.name}: images equal diffusers' within 2e-3 from the recorded latents`, async (t) => {
    const latents = golden.get(`${run.name}.latents`)!;
    const expected = golden.get(`${run.name}.image`)!;
    const per = latents.data.length / run.prompt.length;
    const hw = goldenSpec.height * goldenSpec.width * 3;
    for (let i = 0; i < run.prompt.length; i++) {
      const request = engine.resolve({
        prompt: run.prompt[i],
        negativePrompt: run.negative_prompt?.[i] ?? '',
        guidanceScale: run.guidance_scale,
        steps: run.steps,
        scheduler: SCHEDULER[run.scheduler],
        width: goldenSpec.width,
        height: goldenSpec.height,
        seed: 0n,
      });
      const { images } = await engine.generate(request, { noise: latents.data.slice(i * per, (i + 1) * per) });
      const err = maxAbsDiff(images.data, expected.data.subarray(i * hw, (i + 1) * hw));
      t.log(`prompt ${i}: max abs error ${err.toExponential(2)}`);
      t.true(err < 2e-3, `max abs error ${err}`);
    }
  });
}
