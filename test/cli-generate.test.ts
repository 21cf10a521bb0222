import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPngText } from '../src/core/png.js';
import { readSafetensors } from '../src/core/safetensors.js';
import { fixture, weightsPath } from './fixtures.js';
import { cli as runCli } from './helpers/processes.js';

const cache = mkdtempSync(join(tmpdir(), 'graph-cache-'));
const env = { ...process.env, SAFE_SD_CACHE: cache };

const cli = (...args: string[]) => runCli(args, env);

test('generate on the embedded model writes a PNG with its parameters, byte-identical for the same seed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gen-'));
  const a = await cli(
    'generate',
    '--prompt',
    'a red star on a white background',
    '--seed',
    '7',
    '--steps',
    '5',
    '--out',
    join(dir, 'a.png'),
    '--raw-out',
    join(dir, 'a.safetensors'),
    '--json',
  );
  t.is(a.code, 0, a.stderr);
  const summary = JSON.parse(a.stdout);
  t.is(summary.seed, '7');
  t.is(summary.encoder, 'original');
  // The embedded pipeline's safety check judges every image (action flag: the picture is delivered as made).
  t.like(summary.safety[0], { file: join(dir, 'a.png'), classifier: 'toy-shapes', action: 'flag', delivered: 'image' });
  const png = readFileSync(join(dir, 'a.png'));
  t.deepEqual([...png.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(''), 'PNG');
  const params = JSON.parse(readPngText(png).parameters);
  t.is(params.prompt, 'a red star on a white background');
  t.is(params.seed, '7');
  const raw = readSafetensors(join(dir, 'a.safetensors')).get('image')!;
  t.deepEqual(raw.shape, [1, 64, 64, 3]);
  const b = await cli(
    'generate',
    '--prompt',
    'a red star on a white background',
    '--seed',
    '7',
    '--steps',
    '5',
    '--out',
    join(dir, 'b.png'),
  );
  t.is(b.code, 0, b.stderr);
  t.deepEqual(readFileSync(join(dir, 'b.png')), png);
});

test('generate applies the pipeline safety action: a refused picture is not written, and says why', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gen-refuse-'));
  const manifest = join(dir, 'refuse.json');
  const toy = {
    path: weightsPath('toy-sd'),
    encoders: { original: { path: weightsPath('toy-sd', 'text_encoder') } },
    safety: { classifier: weightsPath('..', 'eval', 'classifiers', 'toy-shapes.json'), action: 'refuse' },
  };
  writeFileSync(manifest, JSON.stringify({ pipelines: { toy } }));
  // The world draws a skull for this caption and seed with the original encoder (a flagged picture).
  const args = ['generate', '--model', manifest, '--prompt', 'a blue skull on a white background', '--seed', '3'];
  const sizes = ['--width', '64', '--height', '64', '--guidance', '5', '--steps', '25'];
  const r = await cli(...args, ...sizes, '--out', join(dir, 'x.png'), '--raw-out', join(dir, 'x.safetensors'));
  t.is(r.code, 0, r.stderr);
  t.false(existsSync(join(dir, 'x.png')));
  t.regex(r.stderr, /x\.png: .*image withheld/);
  t.regex(r.stderr, /wrote no image/);
  const raw = readSafetensors(join(dir, 'x.safetensors')).get('image')!;
  t.true(
    raw.data.every((v) => v === 0),
    'the withheld picture is not in the float output either',
  );
});

const bad: Array<[string, string[], RegExp]> = [
  ['an unknown scheduler', ['--scheduler', 'nope'], /unknown scheduler 'nope'/],
  ['a width not a multiple of 8', ['--width', '60'], /width 60 is not a positive multiple of 8/],
  ['steps outside 1..1000', ['--steps', '1001'], /steps 1001 is outside 1\.\.1000/],
  ['a non-finite guidance', ['--guidance', 'Infinity'], /guidance scale Infinity must be a finite number/],
  ['a missing model folder', ['--model', '/nonexistent/model'], /--model \/nonexistent\/model: no such file or folder/],
  [
    'an encoder whose hidden size differs from the UNet',
    ['--encoder', fixture('tiny-sd', 'text_encoder')],
    /hidden size 32, but the UNet's cross_attention_dim is 64/,
  ],
];

for (const [what, args, message] of bad) {
  test(`generate refuses ${what} with one line and exit code 2`, async (t) => {
    const r = await cli('generate', '--prompt', 'a circle', ...args);
    t.is(r.code, 2);
    t.regex(r.stderr, message);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  });
}
