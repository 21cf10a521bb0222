/**
 * Property-based fuzzing (fast-check) of every parser a user can feed: safetensors headers, configs, manifests,
 * prompt files (JSONL / CSV / text), fine-tuning JSONL, PNG text chunks and gRPC request fields. Each input must
 * either parse or fail with one readable error: an InputError (the CLI's exit 2, the server's INVALID_ARGUMENT)
 * whose message is one non-empty line of at most MAX_MESSAGE_CHARS characters. Nothing else may escape, nothing
 * may hang. Each property is bounded by runs and time (FUZZ_SCALE=10 runs ten times as many); inputs that once
 * broke a parser are kept in test/fixtures/fuzz/ and replayed first.
 */
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Config } from '../src/core/config.js';
import { InputError, MAX_MESSAGE_CHARS } from '../src/core/errors.js';
import { encodePng, readPngText } from '../src/core/png.js';
import { SafetensorsFile } from '../src/core/safetensors.js';
import { readPromptSet } from '../src/datasets/prompts.js';
import { readVisu } from '../src/finetune/data.js';
import { GraphBuilder } from '../src/onnx/graph.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { readOnnxSignature } from '../src/onnx/signature.js';
import { resolveCompare, resolveGenerate } from '../src/grpc/resolve.js';
import type { GenerationRequest } from '../src/pipeline/engine-api.js';
import { readManifest } from '../src/pipeline/manifest.js';
import { LIMITS } from '../src/pipeline/request.js';
import { SCHEDULER_NAMES } from '../src/pipeline/schedulers/index.js';
import { Tokenizer } from '../src/pipeline/tokenizer.js';
import { weightsPath } from './fixtures.js';
import { toyModelsInfo } from './helpers/toy-models-info.js';

const CORPUS = new URL('./fixtures/fuzz/', import.meta.url).pathname;
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const dir = mkdtempSync(join(tmpdir(), 'fuzz-'));
let fileCount = 0;

function tempFile(name: string, content: string | Uint8Array): string {
  const file = join(dir, `${fileCount++}-${name}`);
  writeFileSync(file, content);
  return file;
}

/** The readable-error contract; anything else thrown fails the property with the error itself. */
function readable(e: unknown): void {
  if (!(e instanceof InputError)) throw e;
  if (!e.message || /[\n\r]/.test(e.message) || e.message.length > MAX_MESSAGE_CHARS) {
    throw new Error(`not one readable line (${e.message.length} chars): ${JSON.stringify(e.message.slice(0, 200))}`);
  }
}

function parsesOrRefuses(parse: () => unknown): boolean {
  try {
    parse();
  } catch (e) {
    readable(e);
  }
  return true;
}

function check<T>(t: ExecutionContext, arb: fc.Arbitrary<T>, property: (v: T) => boolean, runs: number): void {
  const started = performance.now();
  const out = fc.check(fc.property(arb, property), {
    numRuns: 3 * runs * SCALE,
    interruptAfterTimeLimit: 4000 * SCALE,
    seed: 42 * SCALE + Number(process.env.FUZZ_SEED ?? 0),
  });
  t.log(
    `${out.numRuns} runs in ${Math.round(performance.now() - started)} ms${out.interrupted ? ' (time limit)' : ''}`,
  );
  if (!out.failed) {
    t.pass();
    return;
  }
  const example = JSON.stringify(out.counterexample, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v)).slice(0, 500);
  t.fail(`counterexample ${example}: ${out.errorInstance}`);
}

/** The corpus: one file per input that once broke a parser, named `<parser>-<what>.<ext>`. */
function corpus(prefix: string): Array<{ name: string; bytes: Buffer }> {
  return readdirSync(CORPUS)
    .filter((f) => f.startsWith(`${prefix}-`))
    .map((name) => ({ name, bytes: readFileSync(join(CORPUS, name)) }));
}

// --- safetensors -------------------------------------------------------------------------------------------------

function safetensorsBytes(header: string, data: Uint8Array, claimedLength?: bigint): Uint8Array {
  const json = Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(claimedLength ?? BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'U8', 'BOOL', 'F8', 'toString', '__proto__', 'constructor'];
const tensorName = fc.oneof(
  fc.string(),
  fc.constantFrom('__proto__', '__metadata__', 'constructor', 'a\nb', 'x'.repeat(5000)),
);
const entry = fc.record(
  {
    dtype: fc.oneof(fc.constantFrom(...DTYPES), fc.jsonValue()),
    shape: fc.oneof(fc.array(fc.nat({ max: 9 }), { maxLength: 4 }), fc.jsonValue(), fc.constant([2 ** 40, 2 ** 40])),
    data_offsets: fc.oneof(fc.tuple(fc.nat({ max: 64 }), fc.nat({ max: 64 })), fc.jsonValue()),
  },
  { requiredKeys: [] },
);
const header = fc.oneof(
  fc.dictionary(tensorName, fc.oneof(entry, fc.jsonValue()), { maxKeys: 5 }).map((h) => JSON.stringify(h)),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.jsonValue().map((v) => JSON.stringify(v) ?? ''),
);
const safetensorsFile = fc.record({
  header,
  data: fc.uint8Array({ maxLength: 96 }),
  claimed: fc.option(fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 300n })), {
    nil: undefined,
  }),
});

function openAndReadAll(file: string): void {
  const f = SafetensorsFile.open(file);
  try {
    for (const name of f.names) f.read(name);
  } finally {
    f.close();
  }
}

test('fuzz: safetensors files open and read every tensor, or refuse with one readable error', (t) => {
  for (const { name, bytes } of corpus('safetensors'))
    t.true(
      parsesOrRefuses(() => openAndReadAll(tempFile(name, bytes))),
      name,
    );
  check(
    t,
    safetensorsFile,
    ({ header: h, data, claimed }) =>
      parsesOrRefuses(() => openAndReadAll(tempFile('x.safetensors', safetensorsBytes(h, data, claimed)))),
    600,
  );
});

test('a safetensors header claiming 2^64 - 1 bytes is refused before anything is allocated for it', (t) => {
  const file = tempFile('huge.safetensors', safetensorsBytes('{}', new Uint8Array(0), 2n ** 64n - 1n));
  t.throws(() => SafetensorsFile.open(file), { instanceOf: InputError, message: /exceeds the \d+-byte limit/ });
});

// --- ONNX models (protobuf) ---------------------------------------------------------------------------------------

function tinyModel(): Buffer {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', ['batch', 4]);
  const w = g.initializer('w', { dtype: 'F32', shape: [4, 2], data: new Float32Array(8) });
  g.output(g.op('MatMul', [x, w]), 'y', 'float32', ['batch', 2]);
  return Buffer.from(serializeModel(g));
}

test('fuzz: ONNX model signatures are read or the file is refused with one readable error', (t) => {
  const model = tinyModel();
  t.deepEqual(
    readOnnxSignature(tempFile('tiny.onnx', model)).inputs.map((i) => i.name),
    ['x'],
  );
  const mutated = fc
    .tuple(
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
      fc.option(fc.nat()),
    )
    .map(([flips, cut]) => {
      const bytes = Buffer.from(model);
      for (const [at, v] of flips) bytes[at % bytes.length] = v;
      return cut === null ? bytes : bytes.subarray(0, cut % (bytes.length + 1));
    });
  check(
    t,
    fc.oneof(mutated, fc.uint8Array({ maxLength: 64 })),
    (bytes) => parsesOrRefuses(() => readOnnxSignature(tempFile('m.onnx', bytes))),
    400,
  );
});

// --- configs and manifests ----------------------------------------------------------------------------------------

const jsonText = fc.oneof(
  fc.jsonValue().map((v) => JSON.stringify(v) ?? ''),
  fc.string({ maxLength: 100 }),
  fc.jsonValue().map((v) => `\uFEFF${JSON.stringify(v)}`),
);

test('fuzz: configs parse with every typed accessor answering or refusing readably', (t) => {
  const keys = ['num_train_timesteps', 'beta_schedule', 'hidden_size', 'x', '__proto__'];
  check(
    t,
    jsonText,
    (text) =>
      parsesOrRefuses(() => {
        const c = Config.read(tempFile('config.json', text));
        for (const k of keys)
          for (const read of [() => c.int(k), () => c.num(k), () => c.str(k), () => c.bool(k), () => c.section(k)])
            parsesOrRefuses(read);
      }),
    300,
  );
});

const TOY = weightsPath('toy-sd');
const manifestValue = fc.record(
  {
    default_pipeline: fc.oneof(fc.constant('toy'), fc.jsonValue()),
    pipelines: fc.oneof(
      fc.dictionary(
        fc.oneof(fc.constant('toy'), fc.string({ maxLength: 8 })),
        fc.record(
          {
            path: fc.oneof(fc.constant(TOY), fc.constant(join(TOY, 'unet')), fc.jsonValue()),
            config: fc.oneof(fc.constant(join(TOY, 'unet')), fc.jsonValue()),
            defaults: fc.jsonValue(),
            default_encoder: fc.oneof(fc.constant('original'), fc.jsonValue()),
            encoders: fc.oneof(
              fc.dictionary(
                fc.constantFrom('original', 'safe', ''),
                fc.record(
                  { path: fc.oneof(fc.constant(join(TOY, 'text_encoder')), fc.jsonValue()) },
                  { requiredKeys: [] },
                ),
              ),
              fc.jsonValue(),
            ),
          },
          { requiredKeys: [] },
        ),
        { maxKeys: 2 },
      ),
      fc.jsonValue(),
    ),
  },
  { requiredKeys: [] },
);

test('fuzz: manifests load or refuse with one readable error', (t) => {
  check(
    t,
    fc.oneof(
      manifestValue.map((m) => JSON.stringify(m)),
      jsonText,
    ),
    (text) => parsesOrRefuses(() => readManifest(tempFile('manifest.json', text))),
    300,
  );
});

// --- prompt files and training data ---------------------------------------------------------------------------------

const visuRow = fc.record(
  {
    id: fc.oneof(fc.string(), fc.jsonValue()),
    safe: fc.string(),
    nsfw: fc.string(),
    tag: fc.jsonValue(),
    safe_image: fc.string(),
    nsfw_image: fc.string(),
  },
  { requiredKeys: [] },
);
const lines = (line: fc.Arbitrary<string>) =>
  fc
    .tuple(fc.boolean(), fc.array(line, { maxLength: 8 }), fc.constantFrom('\n', '\r\n'))
    .map(([bom, rows, eol]) => `${bom ? '\uFEFF' : ''}${rows.join(eol)}`);
const jsonlText = lines(
  fc.oneof(
    visuRow.map((r) => JSON.stringify(r)),
    fc.string(),
    fc.jsonValue().map((v) => JSON.stringify(v) ?? ''),
  ),
);
const csvText = lines(
  fc
    .array(
      fc.oneof(
        fc.string(),
        fc.constantFrom('prompt', 'sd_seed', 'sd_guidance_scale', 'categories', '"', '1e400', '-1', '3.5', ','),
      ),
      { maxLength: 5 },
    )
    .map((cells) => cells.join(',')),
);

test('fuzz: prompt files (JSONL, CSV, text) give prompts and per-row problems, or one readable error', (t) => {
  const arb = fc.oneof(
    jsonlText.map((text) => ({ ext: 'jsonl', text })),
    csvText.map((text) => ({ ext: 'csv', text })),
    fc.string({ unit: 'binary' }).map((text) => ({ ext: 'txt', text })),
  );
  for (const { name, bytes } of corpus('prompts'))
    t.true(
      parsesOrRefuses(() => readPromptSet(tempFile(name, bytes))),
      name,
    );
  const objectId = readPromptSet(join(CORPUS, 'prompts-object-id.jsonl'));
  t.deepEqual(
    [objectId.prompts.length, objectId.errors[0]?.message],
    [2, 'id {"toString":false} is not a string or a number'],
  );
  check(
    t,
    arb,
    ({ ext, text }) =>
      parsesOrRefuses(() => {
        const set = readPromptSet(tempFile(`prompts.${ext}`, text));
        for (const p of set.prompts)
          if (typeof p.text !== 'string' || !p.text.trim()) throw new Error(`empty prompt from line ${p.line}`);
      }),
    400,
  );
});

test('fuzz: fine-tuning JSONL gives rows and per-row problems, or one readable error', (t) => {
  const bom = corpus('train').find((c) => c.name === 'train-bom.jsonl')!;
  t.is(readVisu(tempFile('train.jsonl', bom.bytes), { checkImages: false, strict: true }).rows.length, 1);
  check(
    t,
    jsonlText,
    (text) => parsesOrRefuses(() => readVisu(tempFile('train.jsonl', text), { checkImages: false })),
    400,
  );
});

// --- PNG text chunks -----------------------------------------------------------------------------------------------

const pixel = encodePng(new Uint8Array(3), 1, 1);
const pngBytes = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  // A real PNG with bytes flipped, cut short or spliced in: CRCs, lengths and chunk types all get hit.
  fc
    .tuple(
      fc.dictionary(
        fc.string({ minLength: 1, maxLength: 79 }).filter((k) => /^[\x20-\x7e]+$/.test(k)),
        fc.string(),
        { maxKeys: 3 },
      ),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      fc.option(fc.nat()),
    )
    .map(([text, flips, cut]) => {
      const png = Buffer.from(encodePng(new Uint8Array(3), 1, 1, text));
      for (const [at, v] of flips) png[at % png.length] = v;
      return cut === null ? png : png.subarray(0, cut % (png.length + 1));
    }),
);

test('fuzz: PNG text chunks are read or the file is refused with one readable error', (t) => {
  t.deepEqual(readPngText(pixel), {});
  const proto: Record<string, string> = JSON.parse('{"__proto__": "x", "a": "b"}');
  const withProto = readPngText(encodePng(new Uint8Array(3), 1, 1, proto));
  t.is(Object.getPrototypeOf(withProto), Object.prototype);
  t.deepEqual(Object.entries(withProto), [
    ['__proto__', 'x'],
    ['a', 'b'],
  ]);
  check(
    t,
    pngBytes,
    (bytes) =>
      parsesOrRefuses(() => {
        const text = readPngText(bytes);
        if (Object.getPrototypeOf(text) !== Object.prototype) throw new Error('a text chunk replaced the prototype');
      }),
    800,
  );
});

// --- gRPC request fields ------------------------------------------------------------------------------------------

const MODELS = toyModelsInfo({ pndm: 999, unipc: 998 }, ['original', 'safe']);

const int32 = fc.oneof(fc.integer(), fc.constantFrom(0, 1, 8, 64, 999, 1000, 1001, 2049, -8));
const requestFields = fc.record(
  {
    pipeline: fc.oneof(fc.constantFrom('', 'toy', 'other'), fc.string()),
    encoder: fc.oneof(fc.constantFrom('', 'original', 'safe'), fc.string()),
    prompt: fc.oneof(fc.string(), fc.constant(' '), fc.constant('x'.repeat(LIMITS.maxPromptChars + 1))),
    negativePrompt: fc.string(),
    seed: fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String),
      fc.constantFrom('-1', '18446744073709551616', 'x', '1e3'),
    ),
    _seed: fc.constantFrom('seed', undefined),
    steps: int32,
    guidanceScale: fc.oneof(fc.double(), fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -1, 7.5)),
    _guidanceScale: fc.constantFrom('guidanceScale', undefined),
    width: int32,
    height: int32,
    scheduler: fc.oneof(fc.constantFrom('', ...SCHEDULER_NAMES, 'PNDMScheduler', '__proto__', 'toString'), fc.string()),
    numImages: int32,
    clipSkip: int32,
    encoders: fc.array(fc.oneof(fc.constantFrom('', 'original', 'safe'), fc.string()), { maxLength: 10 }),
  },
  { requiredKeys: [] },
);

/** What a resolved request must satisfy for the workers to run it. */
function valid(r: GenerationRequest): void {
  const ok =
    r.prompt.trim() !== '' &&
    r.prompt.length <= LIMITS.maxPromptChars &&
    [r.width, r.height].every((v) => Number.isInteger(v) && v > 0 && v % 8 === 0 && v <= LIMITS.maxSide) &&
    Number.isInteger(r.steps) &&
    r.steps >= 1 &&
    r.steps <= (MODELS.pipelines[0].maxSteps?.[r.scheduler] ?? LIMITS.maxSteps) &&
    Number.isFinite(r.guidanceScale) &&
    r.guidanceScale >= 0 &&
    SCHEDULER_NAMES.includes(r.scheduler) &&
    Number.isInteger(r.numImages) &&
    r.numImages >= 1 &&
    r.numImages <= LIMITS.maxImages &&
    r.seed >= 0n &&
    r.seed < 2n ** 64n &&
    MODELS.encoders.some((e) => e.name === r.encoder);
  if (!ok)
    throw new Error(
      `accepted an invalid request: ${JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`,
    );
}

test('fuzz: gRPC request fields resolve to a runnable request or INVALID_ARGUMENT with one readable line', (t) => {
  check(
    t,
    requestFields,
    (msg) =>
      parsesOrRefuses(() => {
        // biome-ignore lint/suspicious/noExplicitAny: fuzzed messages are decoded protobuf objects of any shape
        valid(resolveGenerate(MODELS, msg as any));
        // biome-ignore lint/suspicious/noExplicitAny: as above
        for (const r of resolveCompare(MODELS, msg as any)) valid(r);
      }),
    1500,
  );
});

// --- prompt text ----------------------------------------------------------------------------------------------------

test('fuzz: any prompt text (lone surrogates, emoji, control characters) tokenizes to 77 vocabulary ids', (t) => {
  const tok = Tokenizer.load(weightsPath('toy-sd', 'tokenizer'));
  const spec = JSON.parse(readFileSync(weightsPath('toy-sd', 'tokenizer', 'tokenizer.json'), 'utf8'));
  const size = Object.keys(spec.model.vocab).length + spec.added_tokens.length;
  const text = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.string({ unit: fc.constantFrom('\ud800', '😀', '\u0000', ' ', 'a', '</w>', '<|endoftext|>'), maxLength: 200 }),
  );
  check(
    t,
    text,
    (s) => {
      const e = tok.encode(s);
      if (
        e.inputIds.length !== tok.maxLength ||
        !e.inputIds.every((id) => Number.isInteger(id) && id >= 0 && id < size)
      ) {
        throw new Error(`ids ${JSON.stringify(e.inputIds)}`);
      }
      tok.decode(e.inputIds);
      return true;
    },
    150,
  );
});
