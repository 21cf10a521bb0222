import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { inspectPath } from '../src/models/inspect.js';
import { fixture, weightsPath } from './fixtures.js';

const exec = promisify(execFile);

test('a diffusers pipeline: its three weighted parts with dtypes, parameters, sizes; whether its encoder fits', (t) => {
  const i = inspectPath(fixture('tiny-sd'));
  t.is(i.kind, 'diffusers pipeline');
  t.deepEqual(
    i.parts.map((p) => p.name),
    ['unet', 'vae', 'text_encoder'],
  );
  const unet = i.parts[0];
  t.deepEqual(unet.dtypes, { F32: 684 });
  t.true(unet.parameters! > 2e6 && unet.bytes > unet.parameters! * 4);
  t.deepEqual(i.fit, { encoderHiddenSize: 32, crossAttentionDim: 32, fits: true });
});

test('a single file: parts by key prefix; an unusual size is said so, with widths from the tensors', (t) => {
  const i = inspectPath(fixture('tiny-sd-single-file.safetensors'));
  t.is(i.kind, 'single-file SD (not SD 1.x / 2.x sized)');
  const single = Object.fromEntries(i.parts.map((p) => [p.name, p.parameters]));
  const folder = Object.fromEntries(inspectPath(fixture('tiny-sd')).parts.map((p) => [p.name, p.parameters]));
  // The same weights as tiny-sd/, plus the single file's 77-entry position_ids buffer.
  t.deepEqual(single, { ...folder, text_encoder: folder.text_encoder! + 77 });
  t.deepEqual(i.fit, { encoderHiddenSize: 32, crossAttentionDim: 32, fits: true });
  t.regex(i.notes[0], /give the folder of its configs/);
});

test('CLIP folders: the model kind and the text tower width', (t) => {
  const clip = inspectPath(weightsPath('toy-clip'));
  t.is(clip.kind, 'CLIPModel');
  t.like(clip.parts[0].details, { text_hidden_size: 64, text_layers: 4, projection_dim: 64 });
  t.deepEqual(clip.parts[0].dtypes, { F16: 142 });
  t.is(inspectPath(fixture('tiny-sd', 'text_encoder')).kind, 'CLIPTextModel');
});

test('a pickle is refused without being read', (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'inspect-')), 'model.ckpt');
  writeFileSync(file, 'x');
  t.throws(() => inspectPath(file), { message: /pickles, which are never loaded/ });
});

test('safe-sd inspect --json --pipeline says whether an encoder fits a pipeline', async (t) => {
  const { stdout } = await exec('node', [
    'bin/safe-sd.js',
    'inspect',
    weightsPath('toy-clip'),
    '--pipeline',
    fixture('tiny-sd'),
    '--json',
  ]);
  const out = JSON.parse(stdout);
  t.is(out.kind, 'CLIPModel');
  t.deepEqual(out.pipeline_fit, { encoderHiddenSize: 64, crossAttentionDim: 32, fits: false });
  const text = await exec('node', [
    'bin/safe-sd.js',
    'inspect',
    weightsPath('toy-clip'),
    '--pipeline',
    weightsPath('toy-sd'),
  ]);
  t.regex(text.stdout, /hidden size 64 fits its cross_attention_dim 64/);
});
