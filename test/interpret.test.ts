import test from 'ava';
import { f32 } from '../src/core/tensor.js';
import { GraphBuilder, type Dim } from '../src/onnx/graph.js';
import { interpret } from '../src/onnx/interpret.js';
import { addSize, divSizeExact, knownFactor, mulSize, subSize } from '../src/onnx/sym-dims.js';

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

test('symbolic sizes: the factor known to divide them', (t) => {
  t.is(knownFactor(77), 77);
  t.is(knownFactor('2*batch'), 2);
  t.is(knownFactor(mulSize('2*batch', 'seq')), 2);
  t.is(knownFactor(addSize('4*batch', 6)), 2);
  t.is(knownFactor('seq'), 1);
  t.is(knownFactor(0), 1);
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
  const rows = g.op('Reshape', [
    both,
    g.op('Concat', [g.op('Unsqueeze', [g.op('Mul', [seq, g.constI64([2], [])]), g.constI64([0])]), g.constI64([-1])], {
      axis: 0,
    }),
  ]);
  const flattened = g.op('Flatten', [a], { axis: 2 });
  const s = interpret(g).shapes;
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
  const s = interpret(g).shapes;
  t.deepEqual(s.get(sliced), ['batch', null]);
  t.deepEqual(s.get(reshaped), [null, null]);
});

/** The facts of the one node `build` adds to a graph with input x of shape `x`. */
function facts(x: Dim[], build: (g: GraphBuilder, x: string) => string) {
  const g = new GraphBuilder();
  const y = build(g, g.input('x', 'float32', x));
  const f = interpret(g);
  return { shape: f.shapes.get(y), type: f.types.get(y), value: f.values.get(y), flops: f.flops[g.nodes.length - 1] };
}

const weight = (g: GraphBuilder, shape: number[]) =>
  g.initializer(`w${shape.join('x')}`, f32(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape));

test('op table: shapes and FLOPs of Conv, MatMul, Gemm and attention against hand counts', (t) => {
  // 3x3 conv, stride 2, pad 1 over 9x10: floor((9 + 2 - 3) / 2) + 1 = 5, floor((10 + 2 - 3) / 2) + 1 = 5.
  const conv = facts([2, 3, 9, 10], (g, x) =>
    g.op('Conv', [x, weight(g, [4, 3, 3, 3])], { pads: [1, 1, 1, 1], strides: [2, 2] }),
  );
  t.deepEqual(conv.shape, [2, 4, 5, 5]);
  t.is(conv.flops, 2 * (2 * 4 * 5 * 5) * (3 * 3 * 3));
  // Grouped, stride 1 over a symbolic height: the height stays symbolic, and so does the count.
  const grouped = facts(['n', 4, 'h', 6], (g, x) =>
    g.op('Conv', [x, weight(g, [8, 2, 3, 3])], { group: 2, pads: [1, 1, 1, 1] }),
  );
  t.deepEqual(grouped.shape, ['n', 8, 'h', 6]);
  t.is(grouped.flops, '1728*h*n'); // 2 * 8 * 6 * (2 * 3 * 3) per row
  const mm = facts(['b', 1, 5, 7], (g, x) => g.matmul(x, weight(g, [3, 7, 2])));
  t.deepEqual(mm.shape, ['b', 3, 5, 2]);
  t.is(mm.flops, '420*b'); // 2 * 3 * 5 * 2 * 7
  const gemm = facts([7, 5], (g, x) => g.op('Gemm', [x, weight(g, [3, 7])], { transA: 1, transB: 1 }));
  t.deepEqual(gemm.shape, [5, 3]);
  t.is(gemm.flops, 2 * 5 * 3 * 7);
  const mha = facts([2, 10, 16], (g, x) =>
    g.op(
      'MultiHeadAttention',
      [x, weight(g, [2, 6, 16]), weight(g, [2, 6, 8])],
      { num_heads: 4 },
      { domain: 'com.microsoft' },
    ),
  );
  t.deepEqual(mha.shape, [2, 10, 8]);
  t.is(mha.flops, 2 * 2 * 2 * 10 * 6 * 16);
  // Element-wise ops are not counted.
  t.is(facts([2, 3], (g, x) => g.add(x, x)).flops, 0);
});

test('op table: element types, broadcast, Split, Pad, Resize and the contents of shape arithmetic', (t) => {
  t.deepEqual(
    facts(['n', 1, 4], (g, x) => g.op('Where', [g.op('Greater', [x, g.scalarF32(0)]), x, weight(g, [3, 1])])),
    { shape: ['n', 3, 4], type: 'float32', value: undefined, flops: 0 },
  );
  t.is(facts([2, 3], (g, x) => g.op('Equal', [x, x])).type, 'bool');
  t.is(facts([2, 3], (g, x) => g.op('Cast', [x], { to: 10 })).type, 'float16');
  t.deepEqual(
    facts([2, 3], (g, x) => g.op('ArgMax', [x], { axis: 1, keepdims: 0 })),
    { shape: [2], type: 'int64', value: undefined, flops: 0 },
  );
  t.throws(() => facts([2, 3], (g, x) => g.add(x, weight(g, [4]))), { message: /cannot broadcast \[2,3\] with \[4\]/ });
  t.deepEqual(
    facts(['n', 10], (g, x) => g.opN('Split', [x, g.constI64([4, 6])], { axis: 1 }, { outputs: 2 })[1]).shape,
    ['n', 6],
  );
  t.deepEqual(facts(['n', 3, 5, 5], (g, x) => g.op('Pad', [x, g.constI64([0, 0, 0, 0, 0, 0, 1, 1])])).shape, [
    'n',
    3,
    6,
    6,
  ]);
  t.deepEqual(
    facts(['n', 3, 'h', 5], (g, x) => g.op('Resize', [x, '', g.constF32([1, 1, 2, 2])], { mode: 'nearest' })).shape,
    ['n', 3, '2*h', 10],
  );
  // [n, 3, h, w] -> Shape -> the last two dims times 2 -> Resize by sizes.
  const resized = facts(['n', 3, 'h', 'w'], (g, x) => {
    const sizes = g.op(
      'Concat',
      [g.op('Shape', [x], { start: 0, end: 2 }), g.op('Mul', [g.op('Shape', [x], { start: 2 }), g.constI64([2])])],
      { axis: 0 },
    );
    return g.op('Resize', [x, '', '', sizes], { mode: 'nearest' });
  });
  t.deepEqual(resized.shape, ['n', 3, '2*h', '2*w']);
  t.deepEqual(facts([7, 4], (g, x) => g.op('Div', [g.op('Shape', [x]), g.constI64([2])])).value, [3, 2]);
});
