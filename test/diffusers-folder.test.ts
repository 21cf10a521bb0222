import test, { type ExecutionContext } from 'ava';
import { cpSync, mkdtempSync, openSync, closeSync, renameSync, rmSync, statSync, writeSync, readSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixture } from './fixtures.js';
import { contentKey, readDiffusersFolder } from '../src/models/diffusers-folder.js';

const TINY_SD = fixture('tiny-sd');

/** A copy of tiny-sd in a temporary folder, removed when the test ends. */
function copyTinySd(t: ExecutionContext): string {
  const tmp = mkdtempSync(join(tmpdir(), 'diffusers-folder-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const dir = join(tmp, 'tiny-sd');
  cpSync(TINY_SD, dir, { recursive: true });
  return dir;
}

test('tiny-sd: components, classes, configs and weight files', (t) => {
  const { root, components: c } = readDiffusersFolder(TINY_SD);
  t.is(root, TINY_SD.replace(/\/$/, ''));
  t.is(c.unet.className, 'UNet2DConditionModel');
  t.is(c.vae.className, 'AutoencoderKL');
  t.is(c.text_encoder.className, 'CLIPTextModel');
  t.is(c.tokenizer.className, 'CLIPTokenizer');
  t.is(c.scheduler.className, 'PNDMScheduler');
  t.deepEqual(c.unet.weightFiles, [join(root, 'unet', 'diffusion_pytorch_model.safetensors')]);
  t.deepEqual(c.vae.weightFiles, [join(root, 'vae', 'diffusion_pytorch_model.safetensors')]);
  t.deepEqual(c.text_encoder.weightFiles, [join(root, 'text_encoder', 'model.safetensors')]);
  t.is(c.vae.config.num('scaling_factor'), 0.18215);
  t.is(c.text_encoder.config.file, join(root, 'text_encoder', 'config.json'));
  t.is(c.scheduler.config.str('_class_name'), 'PNDMScheduler');
  t.deepEqual(c.tokenizer.files, [
    join(root, 'tokenizer', 'tokenizer.json'),
    join(root, 'tokenizer', 'tokenizer_config.json'),
  ]);
});

test('a missing component folder gives one error naming it', (t) => {
  const dir = copyTinySd(t);
  rmSync(join(dir, 'vae'), { recursive: true });
  t.throws(() => readDiffusersFolder(dir), {
    message: `${dir}: missing component folder vae/ (AutoencoderKL), listed in model_index.json`,
  });
  rmSync(join(dir, 'scheduler'), { recursive: true });
  t.throws(() => readDiffusersFolder(dir), {
    message: /missing component folders vae\/ \(AutoencoderKL\), scheduler\/ \(PNDMScheduler\)/,
  });
});

test('a folder without model_index.json is refused', (t) => {
  t.throws(() => readDiffusersFolder(fixture('clip')), {
    message: /not a diffusers pipeline folder \(no model_index\.json\)/,
  });
});

test('a folder holding only the .fp16 variant loads it', (t) => {
  const dir = copyTinySd(t);
  renameSync(
    join(dir, 'unet', 'diffusion_pytorch_model.safetensors'),
    join(dir, 'unet', 'diffusion_pytorch_model.fp16.safetensors'),
  );
  renameSync(join(dir, 'text_encoder', 'model.safetensors'), join(dir, 'text_encoder', 'model.fp16.safetensors'));
  const { components: c } = readDiffusersFolder(dir);
  t.deepEqual(c.unet.weightFiles, [join(dir, 'unet', 'diffusion_pytorch_model.fp16.safetensors')]);
  t.deepEqual(c.text_encoder.weightFiles, [join(dir, 'text_encoder', 'model.fp16.safetensors')]);
  t.deepEqual(c.vae.weightFiles, [join(dir, 'vae', 'diffusion_pytorch_model.safetensors')]);
});

test('content key: same for a copy at another path, different when a weight or the config changes', (t) => {
  const original = readDiffusersFolder(TINY_SD).components;
  const dir = copyTinySd(t);
  const copy = readDiffusersFolder(dir).components;
  for (const name of ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'] as const) {
    t.is(contentKey(copy[name]), contentKey(original[name]), name);
  }
  t.not(contentKey(original.unet), contentKey(original.vae));

  // Flip one byte in the middle of the VAE's tensor data.
  const file = copy.vae.weightFiles[0];
  const fd = openSync(file, 'r+');
  const at = Math.floor(statSync(file).size * 0.6);
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, at);
  b[0] ^= 0x40;
  writeSync(fd, b, 0, 1, at);
  closeSync(fd);
  t.not(contentKey(readDiffusersFolder(dir).components.vae), contentKey(original.vae));
  t.is(contentKey(readDiffusersFolder(dir).components.unet), contentKey(original.unet));

  const dir2 = copyTinySd(t);
  const fd2 = openSync(join(dir2, 'unet', 'config.json'), 'a');
  writeSync(fd2, '\n');
  closeSync(fd2);
  t.not(contentKey(readDiffusersFolder(dir2).components.unet), contentKey(original.unet));
});
