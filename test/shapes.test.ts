import test from 'ava';
import { GraphBuilder } from '../src/onnx/graph.js';
import { inferShapes } from '../src/onnx/shapes.js';
import { addSize, divSizeExact, mulSize, subSize } from '../src/onnx/sym-dims.js';

test('symbolic sizes: equal polynomials print alike, constants fold, division is exact or nothing', (t) => {
  t.is(addSize('batch', 'batch'), '2*batch');
  t.is(subSize(addSize('batch', 'batch'), 'batch'), 'batch');
  t.is(subSize('seq', 'seq'), 0);
  t.is(addSize(3, 4), 7);
  t.is(mulSize(addSize('batch', 'batch'), 'seq'), '2*batch*seq');
  t.is(mulSize('seq', 'batch'), mulSize('batch', 'seq'));
  t.is(addSize(mulSize('batch', 'seq'), 3), 'batch*seq + 3');
  t.is(divSizeExact(mulSize(mulSize('batch', 'seq'), 128), mulSize('seq', 64)), '2*batch');
  t.is(divSizeExact('batch', 2), undefined);
  t.is(divSizeExact('batch', 'seq'), undefined);
});

test('shapes computed at run time from Shape are followed through Concat, Slice, Reshape, Range and Flatten', (t) => {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', ['batch', 'seq', 64]);
  const b = g.input('b', 'float32', ['batch', 'seq', 64]);
  const both = g.op('Concat', [a, b], { axis: 0 });
  const shape = g.op('Shape', [a]);
  const batch = g.op('Slice', [shape, g.constI64([0]), g.constI64([1])]);
  const first = g.op('Slice', [both, g.constI64([0]), batch, g.constI64([0])]);
  const second = g.op('Slice', [both, batch, g.constI64([Number.MAX_SAFE_INTEGER]), g.constI64([0])]);
  const heads = g.op('Reshape', [both, g.constI64([0, 0, 4, -1])]);
  const flat = g.op('Reshape', [both, g.constI64([-1, 64])]);
  const positions = g.op('Range', [g.constI64([0], []), g.op('Squeeze', [batch]), g.constI64([1], [])]);
  const seq = g.op('Gather', [shape, g.constI64([1], [])]);
  const rows = g.op('Reshape', [both, g.op('Concat', [g.op('Unsqueeze', [g.op('Mul', [seq, g.constI64([2], [])]), g.constI64([0])]), g.constI64([-1])], { axis: 0 })]);
  const flattened = g.op('Flatten', [a], { axis: 2 });
  const s = inferShapes(g);
  t.deepEqual(s.get(both), ['2*batch', 'seq', 64]);
  t.deepEqual(s.get(first), ['batch', 'seq', 64]);
  t.deepEqual(s.get(second), ['batch', 'seq', 64]);
  t.deepEqual(s.get(heads), ['2*batch', 'seq', 4, 16]);
  t.deepEqual(s.get(flat), ['2*batch*seq', 64]);
  t.deepEqual(s.get(positions), ['batch']);
  t.deepEqual(s.get(rows), ['2*seq', '64*batch']);
  t.deepEqual(s.get(flattened), ['batch*seq', 64]);
});

test('a size that cannot be known stays unknown', (t) => {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', ['batch', 'seq']);
  const ids = g.input('n', 'int64', [1]);
  const sliced = g.op('Slice', [a, g.constI64([0]), ids, g.constI64([1])]);
  const reshaped = g.op('Reshape', [a, g.op('Concat', [ids, g.constI64([-1])], { axis: 0 })]);
  const s = inferShapes(g);
  t.deepEqual(s.get(sliced), ['batch', null]);
  t.deepEqual(s.get(reshaped), [null, null]);
});
