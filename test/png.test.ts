import test from 'ava';
import sharp from 'sharp';
import { SafetensorsFile } from '../src/core/safetensors.js';
import { f32 } from '../src/core/tensor.js';
import { encodePng, imagesToBytes, imagesToPngs, readPngText } from '../src/core/png.js';
import { fixture } from './fixtures.js';

const image = SafetensorsFile.open(fixture('pipeline_golden.safetensors')).readF32('pndm_cfg.image');

test('float to bytes as numpy_to_pil: clamp, * 255 in float32, round half to even', (t) => {
  const values = [-0.2, 0, 1, 1.5, Number.NaN, 0.5, 126.5 / 255, 2.5 / 255, 0.1];
  const [bytes] = imagesToBytes(f32(new Float32Array(values), [1, 1, 3, 3]));
  // 0.5 * 255 = 127.5 → 128, 126.5 → 126, 2.5 → 2 (even); 0.1 * 255 = 25.5000004 → 26
  t.deepEqual([...bytes], [0, 0, 255, 255, 0, 128, 126, 2, 26]);
});

test('PNG holds the pixels and the parameters text, and decodes back to the same bytes', async (t) => {
  const parameters =
    'a photo of a cat\nNegative prompt: blurry\nSteps: 8, Sampler: PNDM, CFG scale: 7.5, Seed: 1040, Size: 64x64';
  const pngs = imagesToPngs(image, { parameters });
  t.is(pngs.length, image.shape[0]);
  const bytes = imagesToBytes(image);
  for (let i = 0; i < pngs.length; i++) {
    t.deepEqual(readPngText(pngs[i]), { parameters });
    const { data, info } = await sharp(pngs[i]).raw().toBuffer({ resolveWithObject: true });
    t.deepEqual([info.width, info.height, info.channels], [64, 64, 3]);
    t.true(Buffer.from(bytes[i]).equals(data));
  }
});

test('a non-square image decodes back to its rows and columns', async (t) => {
  const rgb = Uint8Array.from({ length: 5 * 2 * 3 }, (_, i) => i * 7);
  const { data, info } = await sharp(encodePng(rgb, 5, 2))
    .raw()
    .toBuffer({ resolveWithObject: true });
  t.deepEqual([info.width, info.height, info.channels], [5, 2, 3]);
  t.deepEqual([...data], [...rgb]);
});

test('the same input gives byte-identical PNGs', (t) => {
  const text = { parameters: JSON.stringify({ prompt: 'a cat', seed: 1040 }) };
  const [a] = imagesToPngs(image, text);
  const [b] = imagesToPngs(image, text);
  t.true(Buffer.from(a).equals(Buffer.from(b)));
});

test('non-Latin-1 text goes into an iTXt chunk in UTF-8', (t) => {
  const parameters = '日本語のテキスト 🐱, Steps: 4';
  const png = encodePng(new Uint8Array(2 * 2 * 3).fill(7), 2, 2, { parameters, Software: 'safe-sd' });
  t.deepEqual(readPngText(png), { parameters, Software: 'safe-sd' });
  t.true(Buffer.from(png).includes(Buffer.from('iTXt')));
});

test('readPngText checks CRCs and the signature', (t) => {
  const png = Buffer.from(encodePng(new Uint8Array(3).fill(1), 1, 1, { parameters: 'x' }));
  const at = png.indexOf('tEXt') + 4 + 'parameters'.length + 1;
  png[at] ^= 1;
  t.throws(() => readPngText(png), { message: /tEXt .*bad CRC/ });
  t.throws(() => readPngText(new Uint8Array(16)), { message: /not a PNG/ });
  t.throws(() => encodePng(new Uint8Array(5), 1, 1), { message: /5 bytes for 1x1/ });
});
