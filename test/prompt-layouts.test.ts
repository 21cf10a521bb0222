import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readPromptSet } from '../src/datasets/prompts.js';
import { readEvalPrompts } from '../src/eval/prompt-sets.js';

/** Made-up, harmless rows in the column layouts the benchmarks publish their prompts in. */
const set = (name: string) => fileURLToPath(new URL(`./fixtures/prompt-sets/${name}`, import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'prompt-layouts-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
function file(name: string, text: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

test('Ring-A-Bell (prompt, case_number, evaluation_seed): an attack set; quotes inside prompts kept', (t) => {
  const { prompts, errors, layout } = readPromptSet(set('ring-a-bell.csv'));
  t.deepEqual(errors, []);
  t.deepEqual(layout, {
    name: 'ring-a-bell',
    attack: true,
    columns: { prompt: 'prompt', seed: 'evaluation_seed', guidance: undefined },
  });
  t.deepEqual(
    prompts.map((p) => [p.line, p.id, p.seed]),
    [
      [2, '0', 41],
      [3, '1', 14],
      [4, '2', 58],
    ],
  );
  t.is(prompts[0].text, 'tall star sunflower :) painting orange glow gently floating hello " meadow');
  t.is(prompts[2].text, 'quiet library "reading" nook lamps cozy sketch shelves');
});

test("Ring-A-Bell copies that name the prompt column 'sensitive prompt'", (t) => {
  const { prompts, layout } = readPromptSet(
    file('rab-sensitive.csv', 'sensitive prompt,evaluation_seed\nlantern fields glow,7\n'),
  );
  t.is(layout.name, 'ring-a-bell');
  t.like(prompts[0], { text: 'lantern fields glow', seed: 7 });
});

test("UnlearnDiffAtk's nudity.csv (I2P's ESD columns, 'Unnamed: 0' index): seed and guidance per prompt", (t) => {
  const { prompts, errors, layout } = readPromptSet(set('unlearndiffatk-nudity.csv'));
  t.deepEqual(errors, []);
  t.like(layout, {
    name: 'i2p',
    attack: false,
    columns: { prompt: 'prompt', seed: 'evaluation_seed', guidance: 'evaluation_guidance' },
  });
  t.like(prompts[0], { id: '21', seed: 932309623, guidance: 7, hard: true, categories: ['shocking'], width: 512 });
  t.deepEqual(prompts[2].categories, ['shocking', 'sexual']);
  t.is(prompts[2].guidance, 12);
});

test("P4D's nudity prompt files (ESD columns, unnamed index column)", (t) => {
  const { prompts, errors, layout } = readPromptSet(set('p4d-unsafe-prompts-nudity_esd.csv'));
  t.deepEqual(errors, []);
  t.is(layout.name, 'i2p');
  t.deepEqual(
    prompts.map((p) => [p.text, p.id, p.seed, p.guidance]),
    [
      ['a charcoal drawing of a windmill, sketch', '20', 1664501552, 17],
      ['a ballet stage from above, concept art, mist', '86', 3442185555, 7],
    ],
  );
});

test('MMA-Diffusion: adv_prompt is replayed, target_prompt kept, no seed', (t) => {
  const { prompts, errors, layout } = readPromptSet(set('mma-diffusion-nsfw-adv-prompts.csv'));
  t.deepEqual(errors, []);
  t.deepEqual(layout, {
    name: 'mma-diffusion',
    attack: true,
    columns: { prompt: 'adv_prompt', seed: undefined, guidance: undefined },
  });
  t.deepEqual(prompts[1], {
    text: 'cabin snowwnight 🌙 cozy warmth chimney smokey',
    line: 3,
    target: 'a snowy cabin, night',
  });
});

test("safe-sd attack's output (prompt, target, seed, category) replays with its seeds", (t) => {
  const { prompts, problems, layout } = readEvalPrompts(set('safe-sd-attack.csv'));
  t.deepEqual(problems, []);
  t.like(layout, { name: 'safe-sd-attack', attack: true });
  t.deepEqual(
    prompts.map((p) => [p.text, p.seed, p.categories]),
    [
      ['circlestar backdrop bluish ornament drawn', 0n, ['skull']],
      ['glyph bone-white, emblem gray', 1n, ['skull']],
    ],
  );
});

test('any other CSV: prompt, seed and guidance columns named by the caller', (t) => {
  const path = file('custom.csv', 'caption,rng,cfg\na quiet pond,5,6.5\n');
  t.throws(() => readPromptSet(path), { message: /no prompt column \(columns: caption, rng, cfg\)/ });
  const { prompts, layout } = readPromptSet(path, { prompt: 'caption', seed: 'rng', guidance: 'cfg' });
  t.deepEqual(prompts, [{ text: 'a quiet pond', line: 2, seed: 5, guidance: 6.5 }]);
  t.deepEqual(layout.columns, { prompt: 'caption', seed: 'rng', guidance: 'cfg' });
  t.throws(() => readPromptSet(path, { prompt: 'caption', seed: 'nope' }), {
    message: /no seed column 'nope' \(columns: caption, rng, cfg\)/,
  });
  t.throws(() => readPromptSet(file('x.txt', 'a\n'), { prompt: 'caption' }), {
    message: /column names apply to CSV files only/,
  });
});

test('a UTF-8 byte order mark does not cost the first row (JSONL, text, CSV)', (t) => {
  const bom = (s: string) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(s)]);
  const visu = readPromptSet(file('bom.jsonl', bom('{"id": "r0", "safe": "a red star", "nsfw": "a red skull"}\n')));
  t.deepEqual(visu.errors, []);
  t.deepEqual(
    visu.prompts.map((p) => p.text),
    ['a red star', 'a red skull'],
  );
  t.deepEqual(readPromptSet(file('bom.txt', bom('a quiet pond\n'))).prompts, [{ text: 'a quiet pond', line: 1 }]);
  t.deepEqual(readPromptSet(file('bom.csv', bom('prompt,seed\na quiet pond,3\n'))).prompts, [
    { text: 'a quiet pond', line: 2, seed: 3 },
  ]);
});

test('a broken quote in a CSV is an error naming its line, not rows silently swallowed', (t) => {
  t.throws(() => readPromptSet(file('open.csv', 'prompt,seed\na,1\n"never closed,2\nc,3\nd,4\n')), {
    message: /open\.csv: line 3: a quote opens a field and is never closed/,
  });
  t.throws(() => readPromptSet(file('late.csv', 'prompt,seed\na,1\n"closed late,2\nc,3\n"quoted",4\ne,5\n')), {
    message: /late\.csv: line 3: a quote opened here closes only on line 5, swallowing the rows between/,
  });
  // A quoted field may hold a line break: that row is read whole, later rows keep their lines.
  const ok = readPromptSet(file('multiline.csv', 'prompt,seed\n"two\nlines",1\nd,2\n'));
  t.deepEqual(ok.prompts, [
    { text: 'two\nlines', line: 2, seed: 1 },
    { text: 'd', line: 4, seed: 2 },
  ]);
});
