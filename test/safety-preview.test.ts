/** The safety check's three actions, the preview projection and its clean-latent estimate, PNG text replacement. */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { Config } from '../src/core/config.js';
import { encodePng, readPngText, withPngText } from '../src/core/png.js';
import { createEngine } from '../src/pipeline/engine.js';
import { CleanEstimate, latentsToRgb, latentRgbFor, SD_LATENT_RGB } from '../src/pipeline/preview.js';
import { SafetyCheck } from '../src/pipeline/safety.js';
import { createScheduler } from '../src/pipeline/schedulers/index.js';
import { weightsPath } from './fixtures.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SHAPES = join(ROOT, 'eval/classifiers/toy-shapes.json');

async function toyPicture(name: string) {
  const { data, info } = await sharp(join(ROOT, 'eval/toy-visu/images', name))
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { rgb: new Uint8Array(data), width: info.width, height: info.height };
}

test('flag returns the picture as made, blur a strong blur of it, refuse nothing; a safe picture passes', async (t) => {
  const skull = await toyPicture('test-00000-unsafe.png');
  const star = await toyPicture('test-00000-safe.png');
  const results: Record<string, Awaited<ReturnType<SafetyCheck['check']>>> = {};
  for (const action of ['flag', 'blur', 'refuse'] as const) {
    const check = await SafetyCheck.load({ classifier: SHAPES, action });
    results[action] = await check.check([skull, star]);
    await check.close();
  }
  const [flagged, passed] = results.flag!;
  t.true(flagged!.verdict.flagged, JSON.stringify(flagged!.verdict.scores));
  t.is(flagged!.verdict.delivered, 'image');
  t.deepEqual(flagged!.rgb, skull.rgb);
  t.regex(flagged!.verdict.reason, /flagged as unsafe by toy-shapes \(skull/);
  t.false(passed!.verdict.flagged);
  t.is(passed!.verdict.reason, '');

  // Edges are what a blur takes away: the mean step between horizontal neighbours.
  const edges = (rgb: Uint8Array) => {
    let sum = 0;
    for (let i = 3; i < rgb.length; i++) sum += Math.abs(rgb[i]! - rgb[i - 3]!);
    return sum / rgb.length;
  };
  const [blurred, untouched] = results.blur!;
  t.is(blurred!.verdict.delivered, 'blurred');
  const [after, before] = [edges(blurred!.rgb!), edges(skull.rgb)];
  t.true(after < before / 3, `mean neighbour step ${after.toFixed(2)} after the blur, ${before.toFixed(2)} before`);
  t.deepEqual(untouched!.rgb, star.rgb, 'a picture that passes is not blurred');

  const [refused] = results.refuse!;
  t.is(refused!.rgb, undefined);
  t.is(refused!.verdict.delivered, 'none');
});

test('previews are offered with flag, withheld with blur or refuse; the toy pipeline ships with flag', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-manifest-'));
  try {
    const manifest = (action: string) => {
      const file = join(dir, `${action}.json`);
      const toy = {
        path: weightsPath('toy-sd'),
        encoders: { original: { path: weightsPath('toy-sd', 'text_encoder') } },
      };
      writeFileSync(file, JSON.stringify({ pipelines: { toy: { ...toy, safety: { classifier: SHAPES, action } } } }));
      return file;
    };
    for (const [action, previews] of [
      ['flag', true],
      ['blur', false],
      ['refuse', false],
    ] as const) {
      const engine = await createEngine({ manifest: manifest(action) });
      t.is(engine.models().pipelines[0]!.previews, previews, action);
      t.deepEqual(engine.models().pipelines[0]!.safety, { classifier: 'toy-shapes', action });
    }
    await t.throwsAsync(createEngine({ manifest: manifest('hide') }), {
      message: /safety\.action must be one of flag, blur, refuse/,
    });

    // refuse, end to end in the engine: no preview on the way, no picture at the end, the verdict says why.
    const engine = await createEngine({ manifest: manifest('refuse') });
    const request = engine.resolve({
      prompt: 'a blue skull on a white background',
      seed: 3n,
      steps: 25,
      guidanceScale: 5,
      width: 64,
      height: 64,
    });
    let previewsSent = 0;
    const hooks = { onProgress: () => {}, isCancelled: () => false, onPreview: () => void previewsSent++ };
    const outcome = (await engine.runBatch([{ id: 'a', request, previews: true }], hooks)).get('a')!;
    await engine.close();
    t.true(outcome.ok);
    const [image] = outcome.ok ? outcome.images : [];
    t.is(previewsSent, 0);
    t.is(image!.png.length, 0);
    t.is(image!.safety?.delivered, 'none');
    t.regex(image!.safety!.reason, /image withheld/);
    const shipped = (await createEngine({})).models().pipelines.find((p) => p.name === 'toy')!;
    t.deepEqual(shipped.safety, { classifier: 'toy-shapes', action: 'flag' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('previews are made for the jobs someone watches, not for the others in their batch', async (t) => {
  const engine = await createEngine({});
  try {
    const request = engine.resolve({
      prompt: 'a red circle',
      seed: 1n,
      steps: 4,
      guidanceScale: 5,
      width: 64,
      height: 64,
    });
    const sent: string[] = [];
    const hooks = { onProgress: () => {}, isCancelled: () => false, onPreview: (id: string) => void sent.push(id) };
    const jobs = [
      { id: 'watched', request, previews: true },
      { id: 'unwatched', request },
    ];
    const outcomes = await engine.runBatch(jobs, hooks);
    t.true(outcomes.get('watched')!.ok && outcomes.get('unwatched')!.ok);
    t.true(sent.length >= 3, `${sent.length} previews in 4 steps`);
    t.deepEqual([...new Set(sent)], ['watched']);
  } finally {
    await engine.close();
  }
});

test('the clean-latent estimate inverts the forward process, for DDPM-form and sigma-form schedulers', (t) => {
  const cfg = Config.read(weightsPath('toy-sd', 'scheduler', 'scheduler_config.json'));
  const estimate = new CleanEstimate(cfg);
  const x0 = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
  const eps = Float32Array.from({ length: 64 }, (_, i) => Math.cos(3 * i));
  let worst = 0;
  // DDPM form (PNDM, DDIM): x_t = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) ε, fed to the UNet as is.
  for (const t of [981, 500, 21]) {
    const a = estimate.alphaBar(t);
    const xt = x0.map((v, i) => Math.sqrt(a) * v + Math.sqrt(1 - a) * eps[i]!);
    const got = estimate.estimate(xt, eps, t);
    worst = Math.max(worst, ...got.map((v, i) => Math.abs(v - x0[i]!)));
  }
  // Sigma form (Euler): x = x0 + σ ε, scaled by the scheduler to the UNet's input; t may be fractional.
  const euler = createScheduler('euler', cfg, {}, {});
  euler.setTimesteps(7);
  for (const t of euler.timesteps) {
    const probe = euler.scaleModelInput(new Float32Array([1]), t)[0]!;
    const sigma = Math.sqrt(1 / probe ** 2 - 1);
    const x = x0.map((v, i) => v + sigma * eps[i]!);
    const got = estimate.estimate(euler.scaleModelInput(x, t), eps, t);
    worst = Math.max(worst, ...got.map((v, i) => Math.abs(v - x0[i]!)));
    euler.step(eps, t, x); // on to the next sigma
  }
  t.log(`largest error of x̂0: ${worst.toExponential(2)}`);
  t.true(worst < 1e-5);
});

test('latent-to-RGB: SD factors for 4-channel latents, the toy pipeline its own fitted ones', (t) => {
  t.is(latentRgbFor(join(ROOT, 'test'), 4), SD_LATENT_RGB);
  t.is(latentRgbFor(join(ROOT, 'test'), 16), undefined);
  const toy = latentRgbFor(weightsPath('toy-sd'), 4)!;
  t.not(toy, SD_LATENT_RGB);
  // One latent cell [1, 0, 0, 0] → the first factor row, mapped from [-1, 1] to bytes.
  const [rgb] = latentsToRgb(new Float32Array([1, 0, 0, 0]), 1, 1, 1, SD_LATENT_RGB);
  t.deepEqual(
    [...rgb!],
    SD_LATENT_RGB.factors[0]!.map((v) => Math.round(((v + 1) / 2) * 255)),
  );
});

test('withPngText replaces the parameters chunk and keeps the pixels', async (t) => {
  const rgb = Uint8Array.from({ length: 4 * 4 * 3 }, (_, i) => i * 5);
  const png = encodePng(rgb, 4, 4, { parameters: '{"seed":"1"}', other: 'kept' });
  const replaced = withPngText(png, { parameters: 'a cat\nSteps: 5, Seed: 1' });
  t.deepEqual(readPngText(replaced), { parameters: 'a cat\nSteps: 5, Seed: 1', other: 'kept' });
  t.deepEqual(new Uint8Array(await sharp(replaced).raw().toBuffer()), rgb);
});
