import test from 'ava';
import { Adam } from '../src/finetune/adam.js';

/** torch.optim.Adam written out in float64 for a single scalar parameter. */
function reference(p0: number, grads: number[], lr: number, b1: number, b2: number, eps: number, wd: number): number {
  let p = p0;
  let m = 0;
  let v = 0;
  grads.forEach((g0, i) => {
    const t = i + 1;
    const g = g0 + wd * p;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const mHat = m / (1 - b1 ** t);
    const vHat = v / (1 - b2 ** t);
    // torch adds eps to sqrt(v) / sqrt(1 - b2^t), which is sqrt(vHat).
    p -= (lr * mHat) / (Math.sqrt(vHat) + eps);
  });
  return p;
}

test('the first step moves each parameter by lr against the sign of its gradient', (t) => {
  const opt = new Adam({ lr: 0.1 });
  const p = Float32Array.from([1, -2, 0.5]);
  opt.update(new Map([['w', p]]), new Map([['w', Float32Array.from([0.3, -4, 1e-3])]]));
  // With bias correction, m_hat / sqrt(v_hat) = g / |g| on step one.
  const want = [1 - 0.1 * (0.3 / (0.3 + 1e-8)), -2 + 0.1 * (4 / (4 + 1e-8)), 0.5 - 0.1 * (1e-3 / (1e-3 + 1e-8))];
  p.forEach((x, i) => {
    t.true(Math.abs(x - want[i]) < 1e-6, `param ${i}: ${x} vs ${want[i]}`);
  });
  t.is(opt.steps, 1);
});

test('several steps with weight decay follow the torch.optim.Adam definition', (t) => {
  const grads = [0.5, -0.2, 0.05, 1.5, -0.7];
  const opt = new Adam({ lr: 0.01, betas: [0.8, 0.99], eps: 1e-6, weightDecay: 0.1 });
  const p = Float32Array.from([0.7]);
  for (const g of grads) opt.update(new Map([['w', p]]), new Map([['w', Float32Array.from([g])]]));
  const want = reference(0.7, grads, 0.01, 0.8, 0.99, 1e-6, 0.1);
  t.true(Math.abs(p[0] - want) < 1e-6, `${p[0]} vs ${want}`);
});

test('state round-trips: a resumed optimizer continues exactly like the original', (t) => {
  const a = new Adam({ lr: 0.05 });
  const pa = Float32Array.from([1, 2]);
  const step = (opt: Adam, p: Float32Array, g: number[]) =>
    opt.update(new Map([['w', p]]), new Map([['w', Float32Array.from(g)]]));
  step(a, pa, [0.1, -0.3]);
  step(a, pa, [0.2, 0.4]);
  const b = new Adam({ lr: 0.05 });
  b.load(a.state());
  const pb = Float32Array.from(pa);
  step(a, pa, [-0.5, 0.1]);
  step(b, pb, [-0.5, 0.1]);
  t.deepEqual([...pb], [...pa]);
  t.is(b.steps, 3);
  t.deepEqual([...a.state().tensors.keys()], ['adam.exp_avg.w', 'adam.exp_avg_sq.w']);
});

test('bad input is refused with the parameter named', (t) => {
  const opt = new Adam({ lr: 0.1 });
  t.throws(() => opt.update(new Map([['w', new Float32Array(2)]]), new Map()), {
    message: 'Adam: no gradient for parameter w',
  });
  t.throws(() => opt.update(new Map([['w', new Float32Array(2)]]), new Map([['w', new Float32Array(3)]])), {
    message: 'Adam: gradient of w has 3 values, the parameter 2',
  });
  t.throws(() => new Adam({ lr: 0.1, betas: [1, 0.9] }), { message: /beta1 must be in \[0, 1\)/ });
});

test('a gradient zero outside a few rows (an embedding table) updates exactly like the dense definition', (t) => {
  const n = 64 * 6;
  const opt = new Adam({ lr: 0.05 });
  const p = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  const p0 = Float32Array.from(p);
  // Row 1 has a gradient on the first step only (its moments keep moving it afterwards), row 3 on every step.
  const grads = [1, 2, 3].map((step) =>
    Float32Array.from({ length: n }, (_, i) =>
      (i >= 64 && i < 128 && step === 1) || (i >= 192 && i < 256) ? Math.cos(i * step) : 0,
    ),
  );
  for (const g of grads) opt.update(new Map([['emb', p]]), new Map([['emb', g]]));
  for (let i = 0; i < n; i++) {
    const want = reference(
      p0[i],
      grads.map((g) => g[i]),
      0.05,
      0.9,
      0.999,
      1e-8,
      0,
    );
    t.true(Math.abs(p[i] - want) < 1e-6, `value ${i}: ${p[i]} vs ${want}`);
  }
  t.not(p[100], p0[100], 'a row whose gradient went back to zero still moves with its momentum');
  t.is(p[10], p0[10], 'a row that never had a gradient is left exactly as it was');
});

test('the zero test sees a lone value in either half of a pair, an odd tail, a gradient not 8-byte aligned', (t) => {
  const n = 64 * 3 + 5;
  for (const offset of [0, 1]) {
    const opt = new Adam({ lr: 0.05 });
    const p = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
    const p0 = Float32Array.from(p);
    // An aligned gradient, or one that starts 4 bytes into its buffer (no float64 view of it exists).
    const g = new Float32Array(n + offset).subarray(offset);
    g[64 + 7] = 0.5; // the high half of a pair
    g[128 + 10] = -0.25; // the low half of a pair
    g[n - 1] = 0.125; // the odd tail
    g[3] = -0; // a negative zero changes nothing
    opt.update(new Map([['emb', p]]), new Map([['emb', g]]));
    for (let i = 0; i < n; i++) {
      const want = reference(p0[i], [g[i]], 0.05, 0.9, 0.999, 1e-8, 0);
      t.true(Math.abs(p[i] - want) < 1e-6, `offset ${offset}, value ${i}: ${p[i]} vs ${want}`);
    }
    t.not(p[64 + 7], p0[64 + 7]);
    t.not(p[n - 1], p0[n - 1]);
    t.is(p[3], p0[3]);
  }
});

test('a row gradient (rows repeated, rows of 24 values) updates exactly as its dense equivalent, weight decay too', (t) => {
  const width = 24;
  const n = width * 7;
  // Step 1: rows 2, 5, 2 (row 2 twice: its runs add up); step 2: row 5; step 3: no rows at all.
  const steps = [[2n, 5n, 2n], [5n], []];
  for (const weightDecay of [0, 0.01]) {
    const [dense, rowwise] = [0, 1].map(() => new Adam({ lr: 0.05, weightDecay }));
    const pd = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
    const pr = Float32Array.from(pd);
    const p0 = Float32Array.from(pd);
    steps.forEach((rows, s) => {
      const values = Float32Array.from({ length: rows.length * width }, (_, i) => Math.cos(i + 10 * s));
      const g = new Float32Array(n);
      rows.forEach((r, i) => {
        for (let j = 0; j < width; j++) g[Number(r) * width + j] += values[i * width + j];
      });
      dense.update(new Map([['emb', pd]]), new Map([['emb', g]]));
      rowwise.update(new Map([['emb', pr]]), new Map([['emb', { rows: BigInt64Array.from(rows), values, width }]]));
    });
    t.deepEqual(pr, pd, `weight decay ${weightDecay}`);
    t.not(pr[2 * width], p0[2 * width]);
    if (weightDecay === 0) t.is(pr[1], p0[1], 'a row never in a batch is left exactly as it was');
    else t.not(pr[1], p0[1], 'weight decay moves every row');
  }
});

test('a row gradient that does not fit its parameter is refused', (t) => {
  const opt = new Adam({ lr: 0.1 });
  const p = new Float32Array(12);
  const bad = [
    [{ rows: BigInt64Array.from([0n]), values: new Float32Array(5), width: 5 }, /rows of 5 values do not divide/],
    [{ rows: BigInt64Array.from([0n]), values: new Float32Array(3), width: 4 }, /3 values for 1 rows of 4/],
    [{ rows: BigInt64Array.from([3n]), values: new Float32Array(4), width: 4 }, /row 3 of 3/],
  ] as const;
  for (const [g, message] of bad) t.throws(() => opt.update(new Map([['w', p]]), new Map([['w', g]])), { message });
});
