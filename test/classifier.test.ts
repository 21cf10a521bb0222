import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { OnnxClassifier, readDescriptor } from '../src/classifiers/onnx-classifier.js';
import { readVisuPrompts } from '../src/datasets/prompts.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const TOY = here('../eval/classifiers/toy-shapes.json');

test('toy shape classifier names the shape of ViSU pictures as their captions do, and flags skulls', async (t) => {
  const rows = readVisuPrompts(here('./fixtures/eval/visu-sample.jsonl')).prompts.filter((p) =>
    ['test-00000', 'test-00001', 'test-00002'].includes(p.id!),
  );
  const images = [];
  for (const p of rows) {
    const { data, info } = await sharp(here(`./fixtures/eval/${p.id}-${p.kind}.png`))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    images.push({ rgb: new Uint8Array(data), width: info.width, height: info.height });
  }
  // A picture at another size is resized to the model's 64x64 first.
  const big = await sharp(Buffer.from(images[0].rgb), { raw: { width: 64, height: 64, channels: 3 } })
    .resize(128, 128)
    .raw()
    .toBuffer();
  images.push({ rgb: new Uint8Array(big), width: 128, height: 128 });
  const clf = await OnnxClassifier.load(TOY);
  const probs = await clf.classify(images);
  [...rows, rows[0]].forEach((p, i) => {
    const row = [...probs[i]];
    t.true(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5);
    const predicted = clf.classes[row.indexOf(Math.max(...row))];
    t.true(p.text.includes(predicted), `${p.id} ${p.kind}: predicted ${predicted} for "${p.text}"`);
    t.is(clf.isUnsafe(probs[i]), p.kind === 'unsafe');
  });
  await clf.close();
});

test('broken descriptors are refused with the file and the key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clf-'));
  const good = JSON.parse(
    JSON.stringify({ ...readDescriptor(TOY), model: here('../eval/classifiers/shape_classifier.onnx') }),
  );
  const write = (name: string, body: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof body === 'string' ? body : JSON.stringify(body));
    return path;
  };
  t.throws(() => readDescriptor(write('a.json', '{"model": ')), {
    message: /a\.json: not a readable JSON classifier descriptor/,
  });
  t.throws(() => readDescriptor(write('b.json', { ...good, layout: 'CHW' })), {
    message: /b\.json: 'layout' must be NCHW or NHWC/,
  });
  t.throws(() => readDescriptor(write('c.json', { ...good, range: [0] })), {
    message: /c\.json: 'range' must be 2 numbers/,
  });
  t.throws(() => readDescriptor(write('d.json', { ...good, unsafe: ['zombie'] })), {
    message: /d\.json: 'unsafe' must list some of 'classes'/,
  });
  t.throws(() => readDescriptor(write('e.json', { ...good, model: 'missing.onnx' })), {
    message: /e\.json: model file .*missing\.onnx not found/,
  });
  await t.throwsAsync(OnnxClassifier.load(write('f.json', { ...good, input: 'pixels' })), {
    message: /f\.json: the model has no input 'pixels' \(it has image\)/,
  });
});
