import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LocalEngine } from '../src/pipeline/engine.js';
import { readManifest } from '../src/pipeline/manifest.js';
import { fixture, weightsPath } from './fixtures.js';
import { tinySdConfigFolder } from './helpers/pipeline-golden.js';

const exec = promisify(execFile);
const cache = mkdtempSync(join(tmpdir(), 'graph-cache-'));
process.env.SAFE_SD_CACHE ??= cache;

function writeManifest(m: unknown): string {
  const file = join(mkdtempSync(join(tmpdir(), 'manifest-')), 'pipelines.json');
  writeFileSync(file, JSON.stringify(m));
  return file;
}

test('a CLIPModel folder (as Safe-CLIP releases are) serves as a pipeline encoder through a manifest', async (t) => {
  const file = writeManifest({
    pipelines: {
      toy: {
        path: weightsPath('toy-sd'),
        encoders: {
          original: { path: weightsPath('toy-sd', 'text_encoder') },
          safeclip: { path: weightsPath('toy-clip'), safe_clip: true },
        },
      },
    },
  });
  const engine = new LocalEngine(readManifest(file));
  try {
    t.like(
      engine.models().encoders.find((e) => e.name === 'safeclip'),
      { hiddenSize: 64, safeClip: true, layers: 4 },
    );
    const images: Float32Array[] = [];
    for (const encoder of ['original', 'safeclip']) {
      const r = engine.resolve({ prompt: 'a red star', encoder, steps: 3, width: 64, height: 64, seed: 5n });
      const { images: img, delivered } = await engine.generate(r);
      t.deepEqual(img.shape, [1, 64, 64, 3]);
      t.is(delivered.length, 1);
      images.push(img.data);
    }
    // toy-sd's text encoder is toy-clip's text tower (weights/ README): read out of the CLIPModel, the same pictures.
    const err = images[0].reduce((m, v, i) => Math.max(m, Math.abs(v - images[1][i])), 0);
    t.log(`max abs difference ${err.toExponential(2)}`);
    t.true(err < 1e-5, `max abs difference ${err}`);
  } finally {
    await engine.close();
  }
});

test('a manifest may name a single file as pipeline path, with its config folder; its encoder comes with it', (t) => {
  const config = tinySdConfigFolder();
  const file = writeManifest({
    pipelines: {
      single: { path: fixture('tiny-sd-single-file.safetensors'), config, defaults: { width: 64, height: 64 } },
    },
  });
  const m = readManifest(file);
  t.is(m.pipelines[0].config, config);
  t.like(m.pipelines[0].encoders[0], { name: 'original', path: fixture('tiny-sd-single-file.safetensors'), config });
  const engine = new LocalEngine(m);
  t.like(engine.models().pipelines[0], { crossAttentionDim: 32 });
  t.like(engine.models().encoders[0], { hiddenSize: 32, layers: 2 });
});

test('safe-sd generate --model <file.safetensors> --config <dir> writes an image', async (t) => {
  const out = join(mkdtempSync(join(tmpdir(), 'gen-')), 'single.png');
  const args = [
    'bin/safe-sd.js',
    'generate',
    '--model',
    fixture('tiny-sd-single-file.safetensors'),
    '--config',
    tinySdConfigFolder(),
    '--prompt',
    'a cat',
    '--steps',
    '2',
    '--seed',
    '1',
    '--out',
    out,
    '--json',
  ];
  const { stdout } = await exec('node', args, { env: { ...process.env, SAFE_SD_CACHE: cache } });
  t.like(JSON.parse(stdout), { width: 64, height: 64, encoder: 'original' });
  t.true(existsSync(out));
});

test('safe-sd generate --model <file.ckpt> refuses the pickle, exit 2', async (t) => {
  const ckpt = join(mkdtempSync(join(tmpdir(), 'pickle-')), 'model.ckpt');
  writeFileSync(ckpt, 'x');
  const err = await t.throwsAsync(exec('node', ['bin/safe-sd.js', 'generate', '--model', ckpt, '--prompt', 'x']));
  t.is((err as unknown as { code: number }).code, 2);
  t.regex((err as unknown as { stderr: string }).stderr, /pickles, which are never loaded here/);
});
