import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { f32 } from '../src/core/tensor.js';
import { GraphBuilder } from '../src/onnx/graph.js';
import { saveModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';

function convModel(dir: string): string {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [1, 8, 6, 6]);
  const w = g.initializer(
    'w',
    f32(
      Float32Array.from({ length: 8 * 8 * 9 }, (_, i) => Math.sin(i)),
      [8, 8, 3, 3],
    ),
  );
  g.output(g.op('Conv', [x, w], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }), 'y', 'float32', [1, 8, 6, 6]);
  const path = join(dir, 'm.onnx');
  saveModel(g, path, { externalData: true });
  return path;
}

test('a model file opens from its saved optimised copy, with the same results; a corrupt copy is remade', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'optcache-'));
  const cache = mkdtempSync(join(tmpdir(), 'optcache-root-'));
  process.env.SAFE_SD_CACHE = cache;
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = convModel(dir);
  const optimized = join(cache, 'optimized');
  const copiesOf = () => (existsSync(optimized) ? readdirSync(optimized).filter((f) => !f.includes('.tmp-')) : []);
  const x = {
    x: f32(
      Float32Array.from({ length: 288 }, (_, i) => Math.cos(i)),
      [1, 8, 6, 6],
    ),
  };
  const plain = (await run(await createSession(path, { reuseOptimized: false }), x)).y.data;
  t.deepEqual(copiesOf(), []);
  await createSession(path);
  const copies = copiesOf();
  t.is(copies.length, 1);
  t.deepEqual(readdirSync(dir), ['m.onnx', 'm.onnx.data'], 'nothing is written beside the model');
  t.deepEqual(readdirSync(join(optimized, copies[0])).sort(), ['m.onnx', 'm.onnx.data']);
  t.deepEqual((await run(await createSession(path), x)).y.data, plain);
  writeFileSync(join(optimized, copies[0], 'm.onnx'), 'not a model');
  t.deepEqual((await run(await createSession(path), x)).y.data, plain);
  t.true(readdirSync(join(optimized, copies[0])).includes('m.onnx.data'));
});
