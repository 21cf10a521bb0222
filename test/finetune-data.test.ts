import test from 'ava';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BatchOrder } from '../src/finetune/batches.js';
import { DataError, dropRows, loadPixels, readImageEmbeds, readVisu } from '../src/finetune/data.js';
import { writeSafetensors } from '../src/core/safetensors.js';
import { f32 } from '../src/core/tensor.js';

const TOY = new URL('../eval/toy-visu/', import.meta.url).pathname;

function scratch(t: { teardown: (f: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-data-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const good = (id: string) =>
  JSON.stringify({
    id,
    safe: 'a red circle',
    nsfw: 'a red skull',
    tag: 'skull',
    safe_image: 'a.png',
    nsfw_image: 'b.png',
  });

function badFile(dir: string): string {
  copyFileSync(join(TOY, 'images', 'train-00000-safe.png'), join(dir, 'a.png'));
  copyFileSync(join(TOY, 'images', 'train-00000-unsafe.png'), join(dir, 'b.png'));
  writeFileSync(join(dir, 'c.png'), 'not a png');
  const lines = [
    good('r1'),
    '{"id": "r2", "safe": broken',
    JSON.stringify({ id: 'r3', safe: '  ', nsfw: 'x', safe_image: 'a.png', nsfw_image: 'b.png' }),
    JSON.stringify({ id: 'r4', safe: 'x', nsfw: 'y', safe_image: 'missing.png', nsfw_image: 'b.png' }),
    '',
    JSON.stringify({ id: 'r6', safe: 'x', nsfw: 'y', safe_image: 'c.png', nsfw_image: 'b.png' }),
    good('r1'),
  ];
  writeFileSync(join(dir, 'train.jsonl'), lines.join('\n'));
  return join(dir, 'train.jsonl');
}

test('the toy data set reads whole, image paths relative to the file', (t) => {
  const data = readVisu(TOY);
  t.is(data.rows.length, 3000);
  t.is(data.problems.length, 0);
  t.is(data.rows[0].line, 1);
  t.true(data.rows[0].safeImage.startsWith(join(TOY, 'images')));
});

test('bad rows are reported by line and left out; --strict refuses the file at the first', async (t) => {
  const dir = scratch(t);
  const file = badFile(dir);
  const data = readVisu(file);
  t.deepEqual(
    data.rows.map((r) => r.id),
    ['r1', 'r6'],
  );
  t.deepEqual(
    data.problems.map((p) => p.line),
    [2, 3, 4, 7],
  );
  t.regex(data.problems[0].message, /not valid JSON/);
  t.regex(data.problems[1].message, /missing or empty safe/);
  t.regex(data.problems[2].message, /missing image .*missing\.png/);
  t.regex(data.problems[3].message, /id 'r1' appears twice/);
  const err = t.throws(() => readVisu(file, { strict: true }), { instanceOf: DataError });
  t.regex(err!.message, /train\.jsonl:2: not valid JSON/);

  // An unreadable picture only shows when decoded; it is reported by its row's line too.
  const { pixels, bad } = await loadPixels(data.rows, 32, ['safe']);
  t.deepEqual([...bad.keys()], [6]);
  t.deepEqual([...pixels.get('r1.safe')!.shape], [3, 32, 32]);
  const kept = dropRows(data, bad);
  t.deepEqual(
    kept.rows.map((r) => r.id),
    ['r1'],
  );
  t.deepEqual(
    kept.problems.map((p) => p.line),
    [2, 3, 4, 6, 7],
  );
  t.throws(() => dropRows(data, bad, true), { instanceOf: DataError, message: /train\.jsonl:6: .*cannot decode/ });
});

test('a file with no usable row is refused with its first problem', (t) => {
  const dir = scratch(t);
  writeFileSync(join(dir, 'x.jsonl'), 'nope\n');
  t.throws(() => readVisu(join(dir, 'x.jsonl')), {
    instanceOf: DataError,
    message: /no usable rows .*x\.jsonl:1: not valid JSON/,
  });
});

test('precomputed image embeddings: rows without their vector or with the wrong width are reported', (t) => {
  const dir = scratch(t);
  const file = join(dir, 'e.safetensors');
  writeSafetensors(file, { 'a.safe': f32(new Float32Array(4), [4]), 'b.safe': f32(new Float32Array(3), [3]) });
  const rows = ['a', 'b', 'c'].map((id, i) => ({
    line: i + 1,
    id,
    safe: 's',
    nsfw: 'n',
    tag: '',
    safeImage: '',
    nsfwImage: '',
  }));
  const { embeds, bad } = readImageEmbeds(file, rows, 4, ['safe']);
  t.deepEqual([...embeds.keys()], ['a.safe']);
  t.regex(bad.get(2)!, /shape \[3\], expected \[4\]/);
  t.regex(bad.get(3)!, /no image embedding c\.safe/);
});

test('batch order: full batches, a new shuffle each epoch, and a restored order continues identically', (t) => {
  const a = BatchOrder.start(10, 4, 7);
  const first = [a.next(), a.next()];
  t.is(new Set(first.flat()).size, 8);
  const saved = JSON.parse(JSON.stringify(a.state));
  const rest = [a.next(), a.next(), a.next()];
  const b = BatchOrder.restore(10, 4, saved);
  t.deepEqual([b.next(), b.next(), b.next()], rest);
  t.is(b.epoch, 2);
});

test('a byte-order mark before the first row keeps that row', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'visu-bom-'));
  const row = (id: string) =>
    JSON.stringify({ id, safe: 'a star', nsfw: 'a skull', safe_image: 'x.png', nsfw_image: 'x.png' });
  writeFileSync(join(dir, 'train.jsonl'), `\uFEFF${row('first')}\n${row('second')}\n`);
  const data = readVisu(dir, { checkImages: false, strict: true });
  t.deepEqual(
    data.rows.map((r) => r.id),
    ['first', 'second'],
  );
});
