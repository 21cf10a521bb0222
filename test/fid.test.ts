import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { featureStats, frechetDistance, loadStats, saveStats } from '../src/eval/fid.js';
import { SafetensorsFile } from '../src/core/safetensors.js';
import { Rng } from '../src/core/rng.js';
import { fixture } from './fixtures.js';

const GOLDEN = fixture('fid_golden.safetensors');
const cases = JSON.parse(readFileSync(fixture('fid_golden.json'), 'utf8')).cases as { name: string; fid: number }[];

async function statsOf(f: SafetensorsFile, name: string) {
  const t = f.readF32(name);
  return featureStats(t.data, t.shape[0], t.shape[1]);
}

for (const c of cases) {
  test(`Fréchet distance matches pytorch-fid: ${c.name}`, async (t) => {
    const f = SafetensorsFile.open(GOLDEN);
    const fid = await frechetDistance(await statsOf(f, `${c.name}.a`), await statsOf(f, `${c.name}.b`));
    f.close();
    // `identical` is zero up to rounding (the golden is -7.6e-12): compare it absolutely.
    const err = c.name === 'identical' ? Math.abs(fid - c.fid) : Math.abs(fid - c.fid) / Math.abs(c.fid);
    t.log(`fid ${fid}, golden ${c.fid}: ${c.name === 'identical' ? 'abs' : 'relative'} error ${err.toExponential(2)}`);
    // Near 10x the largest errors measured: 6.2e-11 absolute, 1.7e-8 relative (the rank-deficient case).
    t.true(err < (c.name === 'identical' ? 7e-10 : 2e-7), `fid ${fid}, golden ${c.fid}`);
  });
}

test('stats round-trip through safetensors in float64', async (t) => {
  const f = SafetensorsFile.open(GOLDEN);
  const a = await statsOf(f, 'shifted.a');
  const b = await statsOf(f, 'shifted.b');
  f.close();
  const path = join(mkdtempSync(join(tmpdir(), 'fid-')), 'ref.safetensors');
  saveStats(path, a, { features: 'test' });
  const back = loadStats(path);
  t.deepEqual(back.mu, a.mu);
  t.deepEqual(back.sigma, a.sigma);
  t.is(await frechetDistance(back, b), await frechetDistance(a, b));
});

test('featureStats across several Gram blocks: mean and covariance with N−1, exactly symmetric', async (t) => {
  const rng = Rng.fromSeed(5);
  const [n, d] = [40, 300];
  const x = Float32Array.from({ length: n * d }, () => rng.next() * 4 - 1);
  const { mu, sigma } = await featureStats(x, n, d);
  const mean = Array.from(
    { length: d },
    (_, j) => Array.from({ length: n }, (_, i) => x[i * d + j]).reduce((a, b) => a + b) / n,
  );
  let err = 0;
  for (let j = 0; j < d; j++) err = Math.max(err, Math.abs(mu[j] - mean[j]));
  for (let p = 0; p < d; p++) {
    for (let q = 0; q < d; q++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += (x[i * d + p] - mean[p]) * (x[i * d + q] - mean[q]);
      err = Math.max(err, Math.abs(sigma[p * d + q] - s / (n - 1)));
      if (sigma[p * d + q] !== sigma[q * d + p]) t.fail(`sigma[${p}][${q}] !== sigma[${q}][${p}]`);
    }
  }
  t.true(err < 1e-13, `max error ${err}`);
});

test('featureStats refuses a buffer that does not fill [N, D]', async (t) => {
  await t.throwsAsync(featureStats(new Float32Array(10), 3, 4), { message: /10 values do not fill \[3, 4\]/ });
});

test('CLI prints the distance as JSON and rejects bad input in one line', (t) => {
  const out = execFileSync('node', ['bin/safe-sd.js', 'fid', '--a', `${GOLDEN}:small.a`, '--b', `${GOLDEN}:small.b`], {
    encoding: 'utf8',
  });
  const small = cases.find((c) => c.name === 'small')!;
  t.true(Math.abs(JSON.parse(out).fid - small.fid) <= 2e-7 * small.fid);
  const bad = spawnSync('node', ['bin/safe-sd.js', 'fid', '--a', `${GOLDEN}:small.a`, '--b', `${GOLDEN}:wide.b`], {
    encoding: 'utf8',
  });
  t.is(bad.status, 2);
  t.is(bad.stderr.trim().split('\n').length, 1);
  t.regex(bad.stderr, /D=16.*D=256/);
});
