import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalEngine } from '../src/pipeline/engine.js';
import { InvalidRequestError } from '../src/pipeline/engine-api.js';
import { NonFiniteOutputError } from '../src/pipeline/finite-output.js';
import { DEFAULT_MANIFEST, readManifest } from '../src/pipeline/manifest.js';
import { SCHEDULER_NAMES } from '../src/pipeline/schedulers/index.js';

process.env.SAFE_SD_CACHE ??= mkdtempSync(join(tmpdir(), 'graph-cache-'));

const engine = new LocalEngine(readManifest(DEFAULT_MANIFEST));
test.after.always(() => engine.close());

const hooks = { onProgress: () => {}, isCancelled: () => false };

test('every scheduler draws a finite picture with the toy model at 1 and 2 steps', async (t) => {
  for (const scheduler of SCHEDULER_NAMES) {
    for (const steps of [1, 2]) {
      const r = engine.resolve({ prompt: 'a red star on a white background', seed: 1n, scheduler, steps });
      const { images, delivered } = await engine.generate(r);
      t.true(images.data.every(Number.isFinite), `${scheduler} at ${steps}`);
      t.is(delivered.length, 1);
    }
  }
});

test("the toy pipeline's step limits reach the request validation", (t) => {
  const toy = engine.models().pipelines.find((p) => p.name === 'toy')!;
  t.is(toy.maxSteps?.pndm, 999);
  t.is(toy.maxSteps?.euler, 1000);
  const err = t.throws(() => engine.resolve({ prompt: 'a star', scheduler: 'pndm', steps: 1000 }), {
    instanceOf: InvalidRequestError,
  });
  t.regex(err!.message, /steps 1000 is outside 1\.\.999 for scheduler 'pndm'/);
});

// A guidance of 1e37 is a finite number the validation accepts (diffusers too); the UNet overflows float32 to NaN.
const overflowing = { prompt: 'a blue circle', seed: 2n, steps: 2, guidanceScale: 1e37 };

test('an image with non-finite values is an error, never a blank PNG (in process)', async (t) => {
  const err = await t.throwsAsync(engine.generate(engine.resolve(overflowing)), { instanceOf: NonFiniteOutputError });
  t.regex(err!.message, /^image 0 came out with non-finite values .* no image was written$/);
});

test('an image with non-finite values fails its own job in a batch; the others are delivered', async (t) => {
  const bad = engine.resolve(overflowing);
  const good = engine.resolve({ ...overflowing, guidanceScale: 5, prompt: 'a green square' });
  const out = await engine.runBatch(
    [
      { id: 'bad', request: bad },
      { id: 'good', request: good },
    ],
    hooks,
  );
  const b = out.get('bad')!;
  t.false(b.ok);
  if (!b.ok) t.regex(b.message, /non-finite values/);
  t.true(out.get('good')!.ok);
});
