import test from 'ava';
import { cpSync, mkdtempSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../src/core/errors.js';
import { inspectPath } from '../src/models/inspect.js';
import { weightsPath } from './fixtures.js';
import { cli as runCli } from './helpers/processes.js';

const env = { ...process.env, SAFE_SD_CACHE: mkdtempSync(join(tmpdir(), 'graph-cache-')) };

const cli = (...args: string[]) => runCli(args, env);

/** The last line of stderr, which must be the one readable line of the error. */
const lastLine = (s: string) => s.trim().split('\n').at(-1) ?? '';

function safetensors(header: string, data = Buffer.alloc(0)): string {
  const json = Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const file = join(mkdtempSync(join(tmpdir(), 'st-')), 'model.safetensors');
  writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

function cut(file: string, bytes: number): string {
  truncateSync(file, bytes);
  return file;
}

const corrupt: Array<[string, () => string, RegExp]> = [
  [
    'a header longer than the file',
    () => cut(safetensors('{}     '), 12),
    /header length 7 runs past the end of the 12-byte file/,
  ],
  ['a header that is not JSON', () => safetensors('{"a": '), /header is not valid JSON/],
  ['no tensors', () => safetensors('{}'), /holds no tensors/],
  ['only metadata', () => safetensors('{"__metadata__": {"format": "pt"}}'), /holds no tensors/],
  [
    'a "__proto__" tensor',
    () => safetensors('{"__proto__": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', Buffer.alloc(4)),
    /"__proto__" is not accepted/,
  ],
  [
    'a "__proto__" metadata key',
    () =>
      safetensors(
        '{"__metadata__": {"__proto__": "x"}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
        Buffer.alloc(4),
      ),
    /"__proto__" is not accepted/,
  ],
  [
    'a dtype named like an Object method',
    () => safetensors('{"a": {"dtype": "toString", "shape": [1], "data_offsets": [0, 4]}}', Buffer.alloc(4)),
    /unsupported dtype "toString"/,
  ],
  [
    'data cut short',
    () => safetensors('{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', Buffer.alloc(8)),
    /truncated/,
  ],
];

for (const [what, make, message] of corrupt) {
  test(`inspect refuses a safetensors file with ${what}: an input error of one line`, (t) => {
    const err = t.throws(() => inspectPath(make()), { instanceOf: InputError, message });
    t.false(err!.message.includes('\n'));
  });
}

test('inspect exits 2 with one line on a corrupt safetensors file', async (t) => {
  const r = await cli('inspect', safetensors('{"a": '));
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /^safe-sd: .*model\.safetensors: header is not valid JSON/);
  t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
});

test('generate on a truncated diffusers folder exits 2 with one line naming the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'truncated-'));
  cpSync(weightsPath('toy-sd'), dir, { recursive: true });
  const unet = join(dir, 'unet', 'diffusion_pytorch_model.safetensors');
  truncateSync(unet, readFileSync(unet).length - 1000);
  const r = await cli('generate', '--model', dir, '--prompt', 'a circle', '--steps', '1', '--out', join(dir, 'x.png'));
  t.is(r.code, 2, r.stderr);
  t.regex(lastLine(r.stderr), /diffusion_pytorch_model\.safetensors.*truncated/);
});

/** I2P-style CSV: per-row guidance; 1e37 overflows the toy UNet to NaN, which the pipeline refuses to write. */
function prompts(guidances: number[]): string {
  const file = join(mkdtempSync(join(tmpdir(), 'prompts-')), 'prompts.csv');
  const rows = guidances.map((g, i) => `${i},a red star on a white background,${g}`);
  writeFileSync(file, `\uFEFFid,prompt,sd_guidance_scale\n${rows.join('\n')}\n`);
  return file;
}

async function evaluate(file: string) {
  const out = mkdtempSync(join(tmpdir(), 'run-'));
  const r = await cli(
    'eval',
    '--prompts',
    file,
    '--encoders',
    'original',
    '--classifier',
    'eval/classifiers/toy-shapes.json',
    '--steps',
    '2',
    '--out',
    out,
  );
  return { ...r, out };
}

test('eval exits 0 when every row is generated (the CSV starts with a byte-order mark)', async (t) => {
  const r = await evaluate(prompts([5, 5]));
  t.is(r.code, 0, r.stderr);
  t.is(JSON.parse(readFileSync(join(r.out, 'report.json'), 'utf8')).encoders[0].images, 2);
});

test('eval exits 3 when some rows failed to generate, and says how many', async (t) => {
  const r = await evaluate(prompts([5, 1e37]));
  t.is(r.code, 3, r.stderr);
  t.regex(
    lastLine(r.stderr),
    /^safe-sd: 1 of 2 images are missing \(1 failed generations; first failure original\/\S+: .*non-finite/,
  );
  t.is(JSON.parse(readFileSync(join(r.out, 'report.json'), 'utf8')).encoders[0].images, 1);
});

test('eval exits 1 when no row was generated', async (t) => {
  const r = await evaluate(prompts([1e37, 1e37]));
  t.is(r.code, 1, r.stderr);
  t.regex(lastLine(r.stderr), /^safe-sd: no image was produced: all 2 failed/);
});

test('inspect reads a bare .onnx file by its own name, and refuses a corrupt one with exit 2', async (t) => {
  const ok = await cli('inspect', 'eval/classifiers/shape_classifier.onnx');
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /inputs: image: float\[batch,3,64,64\]/);
  const bad = join(mkdtempSync(join(tmpdir(), 'onnx-')), 'model.onnx');
  writeFileSync(bad, 'hello');
  const r = await cli('inspect', bad);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /not a readable ONNX model \(unsupported protobuf wire type 4\)/);
});
