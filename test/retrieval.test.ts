import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClipModel } from '../src/eval/clipscore.js';
import { loadClip } from '../src/models/clip-loader.js';
import { Tokenizer } from '../src/pipeline/tokenizer.js';
import { openTextEmbedder } from '../src/eval/retrieval-embeds.js';
import { readGallery } from '../src/datasets/visu-gallery.js';
import { recallAtK, topK, unsafeShareAtK, type Similarities } from '../src/eval/retrieval-metrics.js';
import { retrievalFigures, runRetrieval } from '../src/eval/retrieval.js';
import type { RetrievalReport } from '../src/eval/retrieval-report.js';
import { weightsPath } from './fixtures.js';

const GALLERY = fileURLToPath(new URL('./fixtures/retrieval/gallery.jsonl', import.meta.url));
const temps: string[] = [];
test.after.always(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});
function temp(): string {
  const d = mkdtempSync(join(tmpdir(), 'retrieval-test-'));
  temps.push(d);
  return d;
}

/** 2 queries × 12 items. Row 0: item j scores j/10 (best first: 11, 10, ..., 0). Row 1: all tied (0, 1, ..., 11). */
function matrix(): Similarities {
  const data = new Float64Array(24);
  for (let j = 0; j < 12; j++) data[j] = j / 10;
  return { rows: 2, cols: 12, data };
}

test('top K: best first, ties to the lower index', (t) => {
  t.deepEqual(topK(matrix(), 0, 3), [11, 10, 9]);
  t.deepEqual(topK(matrix(), 1, 3), [0, 1, 2]);
  t.deepEqual(topK(matrix(), 1, 20), [...Array(12).keys()]);
});

test('Recall@1/5/10 on a constructed similarity matrix', (t) => {
  // Row 0's answer, item 5, is 7th (11..5): in the top 10 only. Row 1's answer, item 0, wins the tie.
  t.deepEqual(recallAtK(matrix(), [5, 0]), { 1: 0.5, 5: 0.5, 10: 1 });
  t.throws(() => recallAtK(matrix(), [5]), { message: /1 answers for 2 queries/ });
});

test('unsafe share@1/5/10 on a constructed similarity matrix', (t) => {
  const unsafe = Array.from({ length: 12 }, (_, j) => j === 0 || j >= 7);
  // Row 0: top 1 [11] 1/1, top 5 [11..7] 5/5, top 10 [11..2] 5/10.
  // Row 1: top 1 [0] 1/1, top 5 [0..4] 1/5, top 10 [0..9] 4/10.
  const share = unsafeShareAtK(matrix(), unsafe);
  t.is(share[1], 1);
  t.true(Math.abs(share[5] - 0.6) < 1e-12);
  t.true(Math.abs(share[10] - 0.45) < 1e-12);
});

test('retrieval figures of constructed embeddings, both directions', (t) => {
  const v = (...x: number[]) => Float32Array.from(x);
  const S = [v(1, 0), v(0, 1)];
  const U = [v(1, 1), v(-1, 0)];
  const V = [v(1, 0), v(0, 1)];
  const G = [v(1, 1), v(-1, 1)];
  const f = retrievalFigures(S, U, V, G, 2);
  // Text to image. U0 over [V0 V1 G0 G1]: cos .71 .71 1 0 -> G0 V0 V1 G1. U1: -1 0 -.71 .71 -> G1 V1 G0 V0.
  t.deepEqual(f.textToImage.safeRecall, { 1: 1, 5: 1, 10: 1 });
  t.deepEqual(f.textToImage.unsafeShare, { 1: 1, 5: 0.5, 10: 0.5 });
  t.deepEqual(f.textToImage.unsafeSafeTwinRecall, { 1: 0, 5: 1, 10: 1 });
  // Image to text. G0 over [S0 S1 U0 U1]: .71 .71 1 -.71 -> U0 S0 S1 U1.
  // G1: -.71 .71 0 .71 -> S1 (tied with U1, lower index first) U1 U0 S0.
  t.deepEqual(f.imageToText.safeRecall, { 1: 1, 5: 1, 10: 1 });
  t.deepEqual(f.imageToText.unsafeShare, { 1: 0.5, 5: 0.5, 10: 0.5 });
  t.deepEqual(f.imageToText.unsafeSafeTwinRecall, { 1: 0.5, 5: 1, 10: 1 });
  t.deepEqual(f.examples, [
    { row: 0, unsafeCaptionTop: [2, 0, 1, 3], unsafeImageTop: [2, 0, 1, 3] },
    { row: 1, unsafeCaptionTop: [3, 1, 2, 0], unsafeImageTop: [1, 3, 2, 0] },
  ]);
});

test('gallery: pictures relative to the file, rows counted as eval does, rows lacking pictures reported', (t) => {
  const { rows, problems } = readGallery(GALLERY);
  t.deepEqual(
    rows.map((r) => [r.index, r.id]),
    [
      [0, 'test-00000'],
      [1, 'test-00001'],
      [2, 'test-00002'],
      [3, 'test-00003'],
    ],
  );
  t.true(existsSync(rows[0].safeImage) && rows[0].safeImage.endsWith('eval/toy-visu/images/test-00000-safe.png'));
  t.is(rows[1].unsafe, 'a blue skull on a white background');
  t.deepEqual(
    problems.map((p) => p.line),
    [5, 6],
  );
  t.regex(problems[0].message, /no safe_image and nsfw_image/);
  t.regex(problems[1].message, /no such picture: .*nowhere\.png/);
  t.deepEqual(
    readGallery(GALLERY, 2, 1).rows.map((r) => r.index),
    [1, 2],
  );
  t.throws(() => readGallery(GALLERY, 0), { message: /--limit expects a row count of 1 or more/ });
});

test('text embeddings: bare tower + CLIPModel projection, or finetune clip-model/, equal the CLIPModel', async (t) => {
  // toy-sd's text encoder is the toy CLIP's text tower; a finetune output folder holds the tower and clip-model/.
  const finetuned = temp();
  for (const f of ['config.json', 'model.safetensors'])
    symlinkSync(weightsPath('toy-sd', 'text_encoder', f), join(finetuned, f));
  mkdirSync(join(finetuned, 'clip-model'));
  for (const f of ['config.json', 'model.safetensors'])
    symlinkSync(weightsPath('toy-clip', f), join(finetuned, 'clip-model', f));
  const clipDir = weightsPath('toy-clip');
  const tokenizer = Tokenizer.load(clipDir);
  const loaded = loadClip(clipDir);
  const projection = loaded.weights.get('text_projection.weight');
  loaded.weights.close();
  const texts = ['a blue star on a white background', 'a red skull on gray'];
  const clip = await ClipModel.load(clipDir);
  const want = await clip.textEmbeds(texts);
  await clip.close();
  for (const [dir, source] of [
    [weightsPath('toy-sd', 'text_encoder'), 'clip'],
    [finetuned, 'finetune clip-model'],
    [clipDir, 'own'],
  ] as const) {
    const e = await openTextEmbedder(dir, tokenizer, projection);
    const got = await e.embed(texts);
    await e.close();
    t.is(e.projection, source);
    let err = 0;
    for (const [i, g] of got.entries()) {
      for (const [j, x] of g.entries()) err = Math.max(err, Math.abs(x - want[i][j]) / (Math.abs(want[i][j]) + 1e-3));
    }
    t.log(`${source}: largest relative difference from the CLIPModel's text_embeds ${err.toExponential(1)}`);
    t.true(err < 3e-5, `${source}: ${err}`);
  }
});

test('runRetrieval: report.json and report.html for a tiny gallery', async (t) => {
  const out = temp();
  const { rows } = readGallery(GALLERY);
  const report = await runRetrieval({
    gallery: rows,
    source: GALLERY,
    encoders: [
      { name: 'original', path: weightsPath('toy-sd', 'text_encoder') },
      { name: 'clip', path: weightsPath('toy-clip') },
    ],
    clipDir: weightsPath('toy-clip'),
    out,
    examples: 2,
  });
  const written = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as RetrievalReport;
  t.deepEqual(written, JSON.parse(JSON.stringify(report)));
  t.like(written.settings, { rows: 4, firstRow: 0, lastRow: 3, ks: [1, 5, 10] });
  t.deepEqual(
    written.encoders.map((e) => e.textProjection),
    ['clip', 'own'],
  );
  t.deepEqual(written.encoders[0].textToImage, written.encoders[1].textToImage);
  t.deepEqual(written.encoders[0].imageToText, written.encoders[1].imageToText);
  // The untouched encoder ranks an unsafe caption's own skull picture first on these rows.
  t.is(written.encoders[0].textToImage.unsafeShare[1], 1);
  t.is(written.warnings.length, 1);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  t.regex(html, /unsafe captions → all pictures: unsafe share/);
  t.regex(html, /src="[^"]*eval\/toy-visu\/images\/test-0000\d-unsafe\.png"/);
});
