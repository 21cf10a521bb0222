import test from 'ava';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { weightsPath } from './fixtures.js';

const ROOT = new URL('../', import.meta.url).pathname;
const TARGETS = join(ROOT, 'eval/toy-visu/test.jsonl');

function scratch(t: { teardown: (f: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-attack-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function attack(args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), 'attack', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  return { status: r.status, stderr: r.stderr };
}

/** Exit 2 with one readable line that matches `message`. */
function refused(
  t: { is: (a: unknown, b: unknown, m?: string) => void; regex: (s: string, r: RegExp) => void },
  r: { status: number | null; stderr: string },
  message: RegExp,
): void {
  t.is(r.status, 2, r.stderr);
  t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.regex(r.stderr, message);
}

const common = (out: string) => ['--method', 'gcg', '--targets', TARGETS, '--limit', '1', '--out', out];

test('an unknown encoder is refused with the encoders there are', (t) => {
  const dir = scratch(t);
  refused(
    t,
    attack([...common(join(dir, 'a.csv')), '--encoder', 'nope']),
    /--encoder nope: pipeline 'toy' has no such encoder \(it has original, safe/,
  );
});

test('a budget of 0 is refused', (t) => {
  const dir = scratch(t);
  refused(
    t,
    attack([...common(join(dir, 'a.csv')), '--encoder', 'original', '--budget', '0']),
    /--budget expects a count of at least 1, got 0/,
  );
});

test('an empty targets file is refused', (t) => {
  const dir = scratch(t);
  const empty = join(dir, 'empty.txt');
  writeFileSync(empty, '\n\n');
  refused(
    t,
    attack(['--method', 'ring-a-bell', '--encoder', 'original', '--targets', empty, '--out', join(dir, 'a.csv')]),
    /--targets .*empty\.txt: no prompt/,
  );
});

test('a banned list that leaves no token is refused', (t) => {
  // A pipeline whose tokenizer knows a handful of words: banning them all must stop the attack before it starts.
  const dir = scratch(t);
  const pipeline = join(dir, 'tiny');
  mkdirSync(join(pipeline, 'tokenizer'), { recursive: true });
  const spec = JSON.parse(readFileSync(weightsPath('toy-sd', 'tokenizer', 'tokenizer.json'), 'utf8'));
  spec.model.vocab = {
    'a</w>': 320,
    'blue</w>': 1746,
    'on</w>': 525,
    '<|startoftext|>': 49406,
    '<|endoftext|>': 49407,
  };
  spec.model.merges = [];
  writeFileSync(join(pipeline, 'tokenizer', 'tokenizer.json'), JSON.stringify(spec));
  cpSync(
    weightsPath('toy-sd', 'tokenizer', 'tokenizer_config.json'),
    join(pipeline, 'tokenizer', 'tokenizer_config.json'),
  );
  const manifest = join(dir, 'manifest.json');
  const encoder = weightsPath('toy-sd', 'text_encoder');
  writeFileSync(
    manifest,
    JSON.stringify({ pipelines: { tiny: { path: pipeline, encoders: { original: { path: encoder } } } } }),
  );
  const targets = join(dir, 'targets.txt');
  writeFileSync(targets, 'a blue skull on a white background\n');
  const r = attack([
    '--manifest',
    manifest,
    '--method',
    'gcg',
    '--encoder',
    'original',
    '--targets',
    targets,
    '--ban',
    'a,blue,on',
    '--out',
    join(dir, 'a.csv'),
  ]);
  refused(t, r, /--ban a,blue,on: no token of the vocabulary is left/);
});
