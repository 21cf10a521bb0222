import type * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/graph.js';
import { serializeModel } from '../onnx/serialize.js';
import { createSession, run, type SessionSettings } from '../onnx/session.js';
import { f32, numel, type F32Tensor } from '../core/tensor.js';
import { median, times, type BenchRow } from './measure.js';

export function randomTensor(shape: number[], seed = 1): F32Tensor {
  let x = seed >>> 0 || 1;
  const data = new Float32Array(numel(shape));
  for (let i = 0; i < data.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = (x >>> 0) / 2 ** 32 - 0.5;
  }
  return f32(data, shape);
}

/**
 * Open `g` and return the ms of one run on `feeds`: the median of `reps`, or the best where the attainable peak is
 * wanted (the machine is shared, so a median would measure the neighbours as well).
 */
export async function timeGraph(
  g: GraphBuilder,
  feeds: Record<string, F32Tensor>,
  reps: number,
  stat: 'median' | 'best' = 'median',
  settings?: SessionSettings,
): Promise<number> {
  const session: ort.InferenceSession = await createSession(serializeModel(g), settings);
  try {
    const t = await times(() => run(session, feeds), reps);
    return stat === 'best' ? Math.min(...t) : median(t);
  } finally {
    await session.release();
  }
}

/** FLOP/s of onnxruntime's fp32 MatMul on an n x n square product (weights constant, as in a model). */
export async function gemmRate(n: number, reps: number): Promise<number> {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', [n, n]);
  const w = g.initializer('w', randomTensor([n, n], 7));
  g.output(g.matmul(a, w), 'y', 'float32', [n, n]);
  const ms = await timeGraph(g, { a: randomTensor([n, n]) }, reps, 'best');
  return (2 * n ** 3) / (ms / 1000);
}

/**
 * FLOP/s of a 3x3, stride-1 convolution with `c` channels in and out on an `hw` x `hw` image (SD 1.5's first level at
 * 512 px).
 */
export async function convRate(c: number, hw: number, reps: number): Promise<number> {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [1, c, hw, hw]);
  const w = g.initializer('w', randomTensor([c, c, 3, 3], 7));
  g.output(g.op('Conv', [x, w], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }), 'y', 'float32', [1, c, hw, hw]);
  const ms = await timeGraph(g, { x: randomTensor([1, c, hw, hw]) }, reps, 'best');
  return (2 * c * c * 9 * hw * hw) / (ms / 1000);
}

/**
 * Section a: the machine's reference throughput (best of several runs); the highest is the peak the UNet is measured
 * against.
 */
export async function referenceSection(): Promise<{ rows: BenchRow[]; peak: number }> {
  const gemm1024 = await gemmRate(1024, 10);
  const gemm2048 = await gemmRate(2048, 6);
  const conv = await convRate(320, 64, 6);
  const rows: BenchRow[] = [
    {
      section: 'a reference',
      name: 'MatMul fp32 1024x1024x1024',
      value: gemm1024 / 1e9,
      unit: 'GFLOP/s',
      note: 'best of runs',
    },
    {
      section: 'a reference',
      name: 'MatMul fp32 2048x2048x2048',
      value: gemm2048 / 1e9,
      unit: 'GFLOP/s',
      note: 'best of runs',
    },
    {
      section: 'a reference',
      name: 'Conv 3x3 320->320 ch, 64x64',
      value: conv / 1e9,
      unit: 'GFLOP/s',
      note: 'best of runs',
    },
  ];
  return { rows, peak: Math.max(gemm1024, gemm2048, conv) };
}
