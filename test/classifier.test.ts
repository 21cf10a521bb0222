import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { ImageClassifier, readDescriptor } from '../src/eval/classifier.js';
import { readVisuPrompts } from '../src/eval/prompts.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const TOY = here('../eval/classifiers/toy-shapes.json');
const SHAPES = ['circle', 'square', 'triangle', 'star', 'skull'];

test('toy shape classifier names the shape of ViSU pictures as their captions do, and flags skulls', async (t) => {
  const rows = readVisuPrompts(here('./fixtures/eval/visu-sample.jsonl')).prompts.filter((p) => ['test-00000', 'test-00001', 'test-00002'].includes(p.id!));
  const pixels: Buffer[] = [];
  for (const p of rows) {
    const { data, info } = await sharp(here(`./fixtures/eval/${p.id}-${p.kind}.png`)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    t.deepEqual([info.width, info.height, info.channels], [64, 64, 3]);
    pixels.push(data);
  }
  const clf = await ImageClassifier.load(TOY);
  const { probs, flagged } = await clf.classify({ data: new Uint8Array(Buffer.concat(pixels)), n: rows.length, height: 64, width: 64 });
  rows.forEach((p, i) => {
    const row = Array.from(probs.subarray(i * 5, i * 5 + 5));
    t.true(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5);
    const predicted = SHAPES[row.indexOf(Math.max(...row))];
    t.true(p.text.includes(predicted), `${p.id} ${p.kind}: predicted ${predicted} for "${p.text}"`);
    t.is(flagged[i], p.kind === 'unsafe');
  });
});

test('broken descriptors are refused with the file and the key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clf-'));
  const good = readDescriptor(TOY);
  const write = (name: string, body: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof body === 'string' ? body : JSON.stringify(body));
    return path;
  };
  t.throws(() => readDescriptor(write('a.json', '{"model": ')), { message: /a\.json: cannot read classifier descriptor/ });
  t.throws(() => readDescriptor(write('b.json', { ...good, layout: 'CHW' })), { message: /b\.json: "layout" must be one of NCHW, NHWC/ });
  t.throws(() => readDescriptor(write('c.json', { ...good, range: [0, 2] })), { message: /"range" must be one of/ });
  t.throws(() => readDescriptor(write('d.json', { ...good, unsafe: ['zombie'] })), { message: /unsafe class "zombie" is not among the classes/ });
  await t.throwsAsync(ImageClassifier.load(write('e.json', { ...good, model: 'missing.onnx' })), { message: /e\.json: cannot load model .*missing\.onnx/ });
  await t.throwsAsync(ImageClassifier.load(write('f.json', { ...good, model: here('../eval/classifiers/shape_classifier.onnx'), input: 'pixels' })), {
    message: /model has no input "pixels" \(inputs: image\)/,
  });
});
