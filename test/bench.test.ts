import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { countFlops } from '../src/bench/flops.js';
import { formatTable } from '../src/bench/run.js';
import { f32 } from '../src/core/tensor.js';
import { join } from 'node:path';
import { Config } from '../src/core/config.js';
import type { AttentionKernel } from '../src/models/scope.js';
import { Scope } from '../src/models/scope.js';
import { defineUnetGraph, loadUnetGraph, parseUnetConfig } from '../src/models/unet.js';
import { SafetensorsWeights, weightFiles } from '../src/core/weights.js';
import { convertToFloat16, FLOAT32_OPS } from '../src/onnx/fp16.js';
import { GraphBuilder } from '../src/onnx/graph.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';
import { weightsPath } from './fixtures.js';
import { maxAbsError } from './helpers/compare.js';

const exec = promisify(execFile);

test('countFlops: Conv and MatMul by hand, through a reshape whose target comes from Shape and Concat', (t) => {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', ['batch', 3, 'h', 'w']);
  const w = g.initializer('w', f32(new Float32Array(4 * 3 * 9), [4, 3, 3, 3]));
  const y = g.op('Conv', [x, w], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2] });
  // [2, 4, 4, 5] -> [2, 4, 20] -> [2, 20, 4] @ [4, 7]
  const target = g.op('Concat', [g.op('Shape', [y], { start: 0, end: 2 }), g.constI64([-1])], { axis: 0 });
  const tokens = g.transpose(g.op('Reshape', [y, target]), [0, 2, 1]);
  const out = g.matmul(tokens, g.initializer('m', f32(new Float32Array(28), [4, 7])));
  g.output(out, 'out', 'float32', ['batch', 20, 7]);
  const c = countFlops(g, { x: [2, 3, 8, 10] });
  t.is(c.byOp.Conv, 2 * 2 * 4 * 4 * 5 * 3 * 9);
  t.is(c.byOp.MatMul, 2 * 2 * 20 * 4 * 7);
  t.is(c.total, c.byOp.Conv + c.byOp.MatMul);
});

test('countFlops names an op it has no rule for', (t) => {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [2, 2]);
  g.output(g.op('Det', [x]), 'y', 'float32', []);
  t.throws(() => countFlops(g, {}), { message: /no shape rule for Det/ });
});

// With float16 weights, and norms and softmax kept in float32.
test('float16 conversion: the toy UNet stays within 2e-3 of float32', async (t) => {
  const dir = weightsPath('toy-sd', 'unet');
  const feeds = {
    sample: f32(
      Float32Array.from({ length: 2 * 4 * 64 }, (_, i) => Math.sin(i)),
      [2, 4, 8, 8],
    ),
    timestep: f32(Float32Array.of(500, 20), [2]),
    encoder_hidden_states: f32(
      Float32Array.from({ length: 2 * 77 * 64 }, (_, i) => Math.cos(i)),
      [2, 77, 64],
    ),
  };
  const ref = (await run(await createSession(serializeModel(loadUnetGraph(dir))), feeds)).out_sample.data;
  const g = convertToFloat16(loadUnetGraph(dir));
  t.true([...g.initializers.values()].every((w) => w.dtype !== 'F32' || w.shape.length <= 1 || w.data.length <= 1));
  t.true(g.inputs.every((v) => v.type === 'float32') && g.outputs.every((v) => v.type === 'float32'));
  // Every float32-only op reads float32: its inputs are Casts to float32 or float32 weights.
  const castTo = new Map(g.nodes.filter((n) => n.op === 'Cast').map((n) => [n.outputs[0], n.attrs.to]));
  for (const n of g.nodes.filter((n) => FLOAT32_OPS.has(n.op))) t.is(castTo.get(n.inputs[0]), 1, n.name);
  const out = (await run(await createSession(serializeModel(g)), feeds)).out_sample.data;
  const err = maxAbsError(out, ref);
  t.log(`float16 vs float32 max abs error ${err.toExponential(2)}`);
  t.true(err < 2e-3);
});

test('formatTable lines up columns and marks unmeasured rows', (t) => {
  const s = formatTable([
    { section: 'a', name: 'x', value: 123.4, unit: 's' },
    { section: 'g', name: 'longer name', unit: 'ratio', note: 'not measured' },
  ]);
  const lines = s.split('\n');
  t.is(lines.length, 4);
  t.regex(lines[2], /\| +123 \| s/);
  t.regex(lines[3], /\| +- \| ratio \| {2,}\| not measured$/);
});

test("the Scope's attentionKernel overrides each module's lowering, with the same UNet output", async (t) => {
  const dir = weightsPath('toy-sd', 'unet');
  const cfg = parseUnetConfig(Config.read(join(dir, 'config.json')));
  const build = (attentionKernel?: AttentionKernel) => {
    const g = new GraphBuilder();
    const weights = SafetensorsWeights.open(weightFiles(dir, 'diffusion_pytorch_model'));
    defineUnetGraph(Scope.root(g, weights, '', { attentionKernel }), cfg);
    weights.close();
    return g;
  };
  const fusedNodes = (g: GraphBuilder) => g.nodes.filter((n) => n.op === 'MultiHeadAttention').length;
  const [plain, mixed, fused] = [build('plain'), build(), build('fused')];
  t.is(fusedNodes(plain), 0);
  t.true(fusedNodes(mixed) > 0 && fusedNodes(mixed) < fusedNodes(fused));
  const feeds = {
    sample: f32(
      Float32Array.from({ length: 4 * 64 }, (_, i) => Math.sin(i)),
      [1, 4, 8, 8],
    ),
    timestep: f32(Float32Array.of(300), [1]),
    encoder_hidden_states: f32(
      Float32Array.from({ length: 77 * 64 }, (_, i) => Math.cos(i)),
      [1, 77, 64],
    ),
  };
  const out = async (g: GraphBuilder) => (await run(await createSession(serializeModel(g)), feeds)).out_sample.data;
  const ref = await out(plain);
  for (const g of [mixed, fused]) {
    const err = maxAbsError(await out(g), ref);
    t.log(`${fusedNodes(g)} fused attention nodes: max abs difference ${err.toExponential(2)}`);
    t.true(err < 8e-6); // near 10x the 7.2e-7 measured
  }
});

test('safe-sd bench --only a --json prints the report; an unknown section is a usage error', async (t) => {
  const { stdout } = await exec('node', ['bin/safe-sd.js', 'bench', '--only', 'a', '--json']);
  const report = JSON.parse(stdout) as {
    machine: { cpus: number };
    rows: Array<{ section: string; value: number; unit: string }>;
  };
  t.true(report.machine.cpus > 0);
  t.deepEqual(
    report.rows.map((r) => r.section),
    ['a reference', 'a reference', 'a reference'],
  );
  t.true(report.rows.every((r) => r.unit === 'GFLOP/s' && r.value > 0));
  const bad = await exec('node', ['bin/safe-sd.js', 'bench', '--only', 'z']).catch(
    (e: { code: number; stderr: string }) => e,
  );
  t.is((bad as { code: number }).code, 2);
  t.regex((bad as { stderr: string }).stderr, /unknown section 'z'/);
});
