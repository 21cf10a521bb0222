import test from 'ava';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GraphBuilder } from '../src/onnx/graph.js';
import { saveModel, serializeModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';
import { Scope } from '../src/models/scope.js';
import { GroupNorm, Linear } from '../src/models/nn.js';
import { MemoryWeights } from '../src/core/weights.js';
import { f32, type F32Tensor } from '../src/core/tensor.js';

function weights(entries: Record<string, F32Tensor>): MemoryWeights {
  return new MemoryWeights(new Map(Object.entries(entries)), 'test.safetensors');
}

test('a Linear reads PyTorch [out, in] weights under its checkpoint path', async (t) => {
  const g = new GraphBuilder();
  const w = weights({
    'proj.weight': f32(Float32Array.from([1, 2, 3, 4, 5, 6]), [3, 2]),
    'proj.bias': f32(Float32Array.from([0.5, 0, -1]), [3]),
  });
  const lin = new Linear(Scope.root(g, w).child('proj'), 2, 3);
  const x = g.input('x', 'float32', ['batch', 2]);
  g.output(lin.forward(x), 'y', 'float32', ['batch', 3]);
  const s = await createSession(serializeModel(g));
  const { y } = await run(s, { x: f32(Float32Array.from([1, -1]), [1, 2]) });
  t.deepEqual([...y.data], [-0.5, -1, -2]);
});

test('GroupNorm matches the definition', async (t) => {
  const g = new GraphBuilder();
  const C = 4;
  const gamma = Float32Array.from([1, 2, 0.5, -1]);
  const beta = Float32Array.from([0.1, 0.2, 0.3, 0.4]);
  const gn = new GroupNorm(
    Scope.root(g, weights({ 'n.weight': f32(gamma, [C]), 'n.bias': f32(beta, [C]) })).child('n'),
    2,
    C,
    1e-5,
  );
  const x = g.input('x', 'float32', [1, C, 'h', 'w']);
  g.output(gn.forward(x), 'y', 'float32', [1, C, 'h', 'w']);
  const s = await createSession(serializeModel(g));
  const xs = Float32Array.from({ length: C * 6 }, (_, i) => Math.sin(i * 1.3) * 3);
  const { y } = await run(s, { x: f32(xs, [1, C, 2, 3]) });
  for (let grp = 0; grp < 2; grp++) {
    const vals = xs.slice(grp * 12, grp * 12 + 12);
    const mean = vals.reduce((a, b) => a + b) / 12;
    const v = vals.reduce((a, b) => a + (b - mean) ** 2, 0) / 12;
    for (let i = 0; i < 12; i++) {
      const c = grp * 2 + Math.floor(i / 6);
      const want = ((vals[i] - mean) / Math.sqrt(v + 1e-5)) * gamma[c] + beta[c];
      t.true(Math.abs(y.data[grp * 12 + i] - want) < 1e-5);
    }
  }
});

test('a missing or misshapen weight names the file and the key', (t) => {
  const g = new GraphBuilder();
  const w = weights({ 'proj.weight': f32(new Float32Array(6), [2, 3]) });
  t.throws(() => new Linear(Scope.root(g, w).child('proj'), 2, 3), {
    message: 'test.safetensors: weight proj.weight has shape [2,3] but the config implies [3,2]',
  });
  t.throws(() => new Linear(Scope.root(g, w).child('other'), 3, 2), {
    message: /test\.safetensors: missing weight other\.weight/,
  });
});

test('external data: weights go beside the model and ORT loads them', async (t) => {
  const g = new GraphBuilder();
  const n = 4096;
  const w = weights({
    'p.weight': f32(
      Float32Array.from({ length: n * 2 }, (_, i) => (i % 7) - 3),
      [n, 2],
    ),
    'p.bias': f32(new Float32Array(n).fill(1), [n]),
  });
  const lin = new Linear(Scope.root(g, w).child('p'), 2, n);
  g.output(lin.forward(g.input('x', 'float32', [1, 2])), 'y', 'float32', [1, n]);
  const dir = mkdtempSync(join(tmpdir(), 'ext-'));
  const { files } = saveModel(g, join(dir, 'model.onnx'), { externalData: true });
  t.deepEqual(files, [join(dir, 'model.onnx'), join(dir, 'model.onnx.data')]);
  t.true(existsSync(join(dir, 'model.onnx.data')));
  const s = await createSession(join(dir, 'model.onnx'));
  const { y } = await run(s, { x: f32(Float32Array.from([1, 1]), [1, 2]) });
  t.is(y.data[0], 0 - 3 + (1 - 3) + 1);
  t.is(y.data.length, n);
});

test('weights chosen by asInput become graph inputs with their starting values', (t) => {
  const g = new GraphBuilder();
  const w = weights({ 'p.weight': f32(new Float32Array(6).fill(2), [3, 2]), 'p.bias': f32(new Float32Array(3), [3]) });
  const s = Scope.root(g, w, '', { asInput: (k) => k.endsWith('.weight') });
  new Linear(s.child('p'), 2, 3);
  t.deepEqual(
    g.inputs.map((i) => i.name),
    ['p.weight'],
  );
  t.deepEqual([...g.initializers.keys()], ['p.bias']);
  t.deepEqual([...s.inputs.get('p.weight')!.data], [2, 2, 2, 2, 2, 2]);
});
