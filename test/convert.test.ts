import test from 'ava';
import { cpSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertPipeline } from '../src/models/convert.js';
import { createSession } from '../src/onnx/session.js';
import { fixture } from './fixtures.js';

const cache = mkdtempSync(join(tmpdir(), 'graph-cache-'));
process.env.SAFE_SD_CACHE = cache;
/** Graphs in the cache (ORT's optimised copies of opened sessions live apart, under optimized/). */
const cachedGraphs = () => readdirSync(cache).filter((f) => f !== 'optimized');

test('convert writes the four graphs and a manifest; the same weights elsewhere reuse the cached graphs', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'convert-'));
  const m = convertPipeline(fixture('tiny-sd'), out);
  t.deepEqual(Object.keys(m.graphs).sort(), ['text_encoder', 'unet', 'vae_decoder', 'vae_encoder']);
  for (const g of Object.values(m.graphs)) await t.notThrowsAsync(createSession(join(out, g.file)));
  t.deepEqual(JSON.parse(readFileSync(join(out, 'safe-sd-graphs.json'), 'utf8')).graphs.unet.key, m.graphs.unet.key);
  const built = cachedGraphs().length;
  t.is(built, 4);

  const again = convertPipeline(fixture('tiny-sd'), out);
  t.true(
    Object.values(again.graphs).every((g) => g.reused),
    'an up-to-date output folder is left as it is',
  );

  const copy = mkdtempSync(join(tmpdir(), 'tiny-sd-copy-'));
  cpSync(fixture('tiny-sd'), copy, { recursive: true });
  const out2 = mkdtempSync(join(tmpdir(), 'convert-'));
  const m2 = convertPipeline(copy, out2);
  t.is(cachedGraphs().length, built, 'no graph was built again for the same content under another path');
  t.deepEqual(readFileSync(join(out2, 'unet.onnx')), readFileSync(join(out, 'unet.onnx')));
  t.is(m2.graphs.unet.key, m.graphs.unet.key);
});

test('convert refuses a folder with a missing component, naming it', (t) => {
  const copy = mkdtempSync(join(tmpdir(), 'tiny-sd-broken-'));
  cpSync(fixture('tiny-sd'), copy, { recursive: true, filter: (src) => !src.includes(`${join('tiny-sd', 'vae')}`) });
  t.throws(() => convertPipeline(copy, mkdtempSync(join(tmpdir(), 'convert-'))), {
    message: /missing component folder vae\//,
  });
});
