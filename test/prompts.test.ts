import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readPromptSet } from '../src/datasets/prompts.js';
import { readEvalPrompts } from '../src/eval/prompt-sets.js';

const eval_ = (name: string) => fileURLToPath(new URL(`./fixtures/eval/${name}`, import.meta.url));

test('I2P CSV (ESD layout): categories, hard, seed, guidance, size; bad rows reported by line', (t) => {
  const { prompts, errors } = readPromptSet(eval_('i2p-sample.csv'));
  t.is(prompts.length, 16);
  t.like(prompts[0], {
    line: 2,
    categories: ['violence', 'self-harm'],
    hard: true,
    seed: 4261553411,
    guidance: 13,
    width: 512,
    height: 512,
  });
  t.true(prompts[0].text.startsWith('weird and disturbing portrait of todd solondz'));
  t.like(prompts[1], { categories: ['self-harm'], hard: false, seed: 4080709695, guidance: 7 });
  t.deepEqual(
    errors.map((e) => e.line),
    [7, 8, 9],
  );
  t.regex(errors[0].message, /4 fields, the header has 16/);
  t.regex(errors[1].message, /evaluation_seed "notaseed"/);
  t.regex(errors[2].message, /empty prompt/);
});

test('I2P CSV (original layout): sd_seed and sd_guidance_scale, no index column', (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'prompts-')), 'i2p.csv');
  writeFileSync(
    path,
    'prompt,categories,hard,sd_seed,sd_guidance_scale,sd_image_width,sd_image_height\n"a, b",hate,0,42,7.5,512,768\n',
  );
  const { prompts, errors } = readPromptSet(path);
  t.deepEqual(errors, []);
  t.deepEqual(prompts, [
    { text: 'a, b', line: 2, categories: ['hate'], hard: false, seed: 42, guidance: 7.5, width: 512, height: 768 },
  ]);
});

test('COCO-30k CSV: prompt, image id and seed', (t) => {
  const { prompts, errors } = readPromptSet(eval_('coco-sample.csv'));
  t.deepEqual(errors, []);
  t.deepEqual(prompts[0], {
    text: 'A bicycle replica with a clock as the front wheel.',
    line: 2,
    id: '000000203564',
    seed: 41337,
  });
});

test('CSV without a prompt column is refused with the columns it has', (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'prompts-')), 'x.csv');
  writeFileSync(path, 'caption,seed\nx,1\n');
  t.throws(() => readPromptSet(path), { message: /no prompt column \(columns: caption, seed\)/ });
});

test('ViSU JSONL: a safe and an unsafe prompt per row; broken rows skipped with their line', (t) => {
  const { prompts, errors } = readPromptSet(eval_('visu-sample.jsonl'));
  t.is(prompts.length, 8);
  t.deepEqual(prompts[0], {
    text: 'a picture of a black triangle over a white backdrop',
    line: 1,
    id: 'test-00000',
    tag: 'skull',
    kind: 'safe',
    image: 'images/test-00000-safe.png',
  });
  t.deepEqual(prompts[1], {
    text: 'a picture of a black skull over a white backdrop',
    line: 1,
    id: 'test-00000',
    tag: 'skull',
    kind: 'unsafe',
    image: 'images/test-00000-unsafe.png',
  });
  t.is(prompts[7].line, 6);
  t.deepEqual(
    errors.map((e) => [e.line, e.message.split(':')[0]]),
    [
      [4, 'not valid JSON'],
      [5, 'missing or empty nsfw'],
    ],
  );
});

test('plain text: one prompt a line, blank lines skipped, line numbers kept', (t) => {
  const { prompts } = readPromptSet(eval_('prompts.txt'));
  t.deepEqual(prompts, [
    { text: 'a red circle on white', line: 1 },
    { text: 'a blue star, gray background', line: 3 },
  ]);
});

test('a held-out slice: --skip and --limit count rows, a ViSU pair stays together, rows keep their index', (t) => {
  const { prompts } = readEvalPrompts(fileURLToPath(new URL('../eval/toy-visu/test.jsonl', import.meta.url)), 2, 96);
  t.deepEqual(
    prompts.map((p) => [p.id, p.index]),
    [
      ['test-00096-safe', 96],
      ['test-00096-unsafe', 96],
      ['test-00097-safe', 97],
      ['test-00097-unsafe', 97],
    ],
  );
  t.throws(() => readEvalPrompts('eval/toy-visu/test.jsonl', 2, -1), {
    message: /--skip expects a row count of 0 or more/,
  });
});
