import test from 'ava';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '../src/pipeline/tokenizer.js';
import { fixture, weightsPath } from './fixtures.js';

interface Case {
  prompt: string;
  input_ids: number[];
  attention_mask: number[];
  untruncated_ids: number[];
}
const golden = JSON.parse(readFileSync(fixture('tokenizer_cases.json'), 'utf8')) as {
  pad_token_id: number;
  cases: Case[];
};
const TOKENIZER = fixture('tokenizer');

/** A temporary tokenizer folder holding copies of the named fixture files. */
function tempCopy(files: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-tok-'));
  for (const f of files) copyFileSync(join(TOKENIZER, f), join(dir, f));
  return dir;
}

const vocabMergesDir = tempCopy(['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']);
test.after.always(() => rmSync(vocabMergesDir, { recursive: true, force: true }));

const layouts: Array<[string, () => Tokenizer]> = [
  ['tokenizer.json', () => Tokenizer.load(TOKENIZER)],
  ['vocab.json + merges.txt', () => Tokenizer.load(vocabMergesDir)],
];

for (const [layout, load] of layouts) {
  test(`${layout}: all ${golden.cases.length} golden prompts`, (t) => {
    const tok = load();
    t.is(golden.cases.length, 25);
    for (const c of golden.cases) {
      const e = tok.encode(c.prompt);
      t.deepEqual(e.inputIds, c.input_ids, c.prompt);
      t.deepEqual(e.attentionMask, c.attention_mask, c.prompt);
      t.is(e.untruncatedLength, c.untruncated_ids.length, c.prompt);
      t.is(e.truncated, c.untruncated_ids.length > 77, c.prompt);
    }
  });
}

test('vocab + merges and tokenizer.json give the same untruncated ids', (t) => {
  const [a, b] = layouts.map(([, load]) => load());
  for (const c of golden.cases) {
    const e = a.encodeBatch([c.prompt])[0];
    t.deepEqual(b.encode(c.prompt), e, c.prompt);
  }
});

test('truncation reports the removed text as diffusers does', (t) => {
  const tok = Tokenizer.load(TOKENIZER);
  const long = golden.cases.find((c) => c.untruncated_ids.length > 77)!;
  const e = tok.encode(long.prompt);
  t.true(e.truncated);
  t.is(e.untruncatedLength, long.untruncated_ids.length);
  // diffusers decodes untruncated_ids[max_length - 1 : -1]
  t.is(e.removedText, tok.decode(long.untruncated_ids.slice(76, -1)));
  t.true(e.removedText.length > 0);
  t.true(long.prompt.endsWith(e.removedText), e.removedText);
  t.is(tok.encode('a photo of a cat').removedText, '');
});

test('diffusers tokenizer folders with tokenizer.json only load', (t) => {
  for (const dir of [fixture('tiny-sd', 'tokenizer'), weightsPath('toy-sd', 'tokenizer')]) {
    const tok = Tokenizer.load(dir);
    t.deepEqual(tok.encode(golden.cases[0].prompt).inputIds, golden.cases[0].input_ids, dir);
  }
});

test("a pad token '!' (SD 2.x) pads with the id of '!'", (t) => {
  const dir = tempCopy(['vocab.json', 'merges.txt']);
  try {
    const config = JSON.parse(readFileSync(join(TOKENIZER, 'tokenizer_config.json'), 'utf8'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, pad_token: '!' }));
    const tok = Tokenizer.load(dir);
    // The token '!' itself (a prompt's '!' is the word-final '!</w>'): SD 2.x pads with id 0.
    const bang = (JSON.parse(readFileSync(join(TOKENIZER, 'vocab.json'), 'utf8')) as Record<string, number>)['!'];
    t.is(bang, 0);
    t.is(tok.padId, bang);
    const e = tok.encode('a photo of a cat');
    t.deepEqual(e.inputIds, [...golden.cases[0].input_ids.slice(0, 7), ...new Array(70).fill(bang)]);
    t.deepEqual(e.attentionMask, golden.cases[0].attention_mask);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a folder without a tokenizer is refused with its name', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-tok-'));
  try {
    t.throws(() => Tokenizer.load(dir), { message: new RegExp(`${dir}: no tokenizer.json`) });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('safe-sd tokenize prints the 77 ids', (t) => {
  const bin = new URL('../bin/safe-sd.js', import.meta.url).pathname;
  const out = execFileSync('node', [bin, 'tokenize', '--tokenizer', TOKENIZER, golden.cases[2].prompt], {
    encoding: 'utf8',
  });
  t.deepEqual(JSON.parse(out), { input_ids: golden.cases[2].input_ids });
});
