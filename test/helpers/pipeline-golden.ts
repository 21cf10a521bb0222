import type { ExecutionContext } from 'ava';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalEngine } from '../../src/pipeline/engine.js';
import { readSafetensors } from '../../src/core/safetensors.js';
import type { F32Tensor } from '../../src/core/tensor.js';
import { fixture } from '../fixtures.js';
import { maxAbsError } from './compare.js';
import goldenSpec from '../fixtures/reference/pipeline_golden.json' with { type: 'json' };

/** The pipeline golden, run against other forms of the same tiny-sd weights (single file, ONNX exports). */

export const runs = goldenSpec.runs;
/** Bound on the images' max abs error: near 10x the largest measured (1.9e-6), which ORT's thread count can move. */
export const PIPELINE_TOL = 2e-5;
const golden = readSafetensors(fixture('pipeline_golden.safetensors')) as Map<string, F32Tensor>;

/**
 * The golden's scheduler config as a scheduler/scheduler_config.json (the reference built each scheduler from the
 * config recorded in the golden, not from tiny-sd's file; see test/pipeline.test.ts), copied into `dir`.
 */
export function writeGoldenScheduler(dir: string): void {
  writeFileSync(
    join(dir, 'scheduler', 'scheduler_config.json'),
    JSON.stringify({ _class_name: 'PNDMScheduler', ...goldenSpec.scheduler_config }),
  );
}

/** tiny-sd's config files only (no weights), with the golden's scheduler: the config folder of its single file. */
export function tinySdConfigFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tiny-sd-config-'));
  for (const part of ['unet', 'vae', 'text_encoder', 'scheduler', 'tokenizer'])
    cpSync(fixture('tiny-sd', part), join(dir, part), { recursive: true, filter: (f) => !f.endsWith('.safetensors') });
  writeGoldenScheduler(dir);
  return dir;
}

const SCHEDULER: Record<string, string> = {
  PNDMScheduler: 'pndm',
  EulerDiscreteScheduler: 'euler',
  DPMSolverMultistepScheduler: 'dpmpp-2m',
  DDIMScheduler: 'ddim',
};

/** Generate the golden run's images from its recorded latents; the largest error over its prompts. */
export async function goldenRunError(
  t: ExecutionContext,
  engine: LocalEngine,
  run: (typeof goldenSpec.runs)[number],
): Promise<number> {
  const latents = golden.get(`${run.name}.latents`)!;
  const expected = golden.get(`${run.name}.image`)!;
  const per = latents.data.length / run.prompt.length;
  const hw = goldenSpec.height * goldenSpec.width * 3;
  let worst = 0;
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
    const err = maxAbsError(images, {
      dtype: 'F32',
      shape: [1, goldenSpec.height, goldenSpec.width, 3],
      data: expected.data.subarray(i * hw, (i + 1) * hw),
    });
    t.log(`${run.name} prompt ${i}: max abs error ${err.toExponential(2)}`);
    worst = Math.max(worst, err);
  }
  return worst;
}
