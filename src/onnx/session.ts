import * as ort from 'onnxruntime-node';
import type { F32Tensor, Tensor } from '../core/tensor.js';
import { openOptimized } from './optimized-cache.js';

const ORT_TYPE = {
  F64: 'float64',
  F32: 'float32',
  F16: 'float16',
  I64: 'int64',
  I32: 'int32',
  U8: 'uint8',
  BOOL: 'bool',
} as const;

export function toOrt(t: Tensor): ort.Tensor {
  if (t.dtype === 'BF16') throw new Error('bfloat16 tensors are widened to float32 before inference');
  return new ort.Tensor(ORT_TYPE[t.dtype], t.data as never, t.shape);
}

const DTYPE_OF = Object.fromEntries(Object.entries(ORT_TYPE).map(([d, o]) => [o, d])) as Record<
  string,
  Tensor['dtype']
>;

/** An output of any element type the project's tensors hold. */
export function fromOrtAny(t: ort.Tensor): Tensor {
  const dtype = DTYPE_OF[t.type];
  if (!dtype) throw new Error(`unexpected output element type ${t.type}`);
  return { dtype, shape: [...t.dims], data: t.data } as Tensor;
}

export function fromOrt(t: ort.Tensor): F32Tensor {
  if (t.type !== 'float32') throw new Error(`expected a float32 output, got ${t.type}`);
  return { dtype: 'F32', shape: [...t.dims], data: t.data as Float32Array };
}

export interface SessionSettings {
  intraOpThreads?: number;
  executionProviders?: string[];
  /** Default 'all'; see docs/benchmarks.md for what each level costs to open and run. */
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** ORT's CPU memory arena (default on). */
  enableCpuMemArena?: boolean;
  /**
   * For a model given by path: keep ORT's optimised model beside it and open that next time (default true; see
   * optimized-cache.ts).
   */
  reuseOptimized?: boolean;
  /** Build the UNet as a float16 graph (src/onnx/fp16.ts); the VAE decoder and text encoders stay float32. */
  float16?: boolean;
  /**
   * Whether ORT's intra-op threads spin between parallel sections (default true, ORT's default). Spinning helps large
   * products (bench a: 1024³ MatMul 150-190 GFLOP/s without, 180-260 with), but a spinning thread of one session
   * takes a core from the next session run on two cores (bench g).
   */
  spinning?: boolean;
}

export const PROVIDERS = ['cpu', 'cuda', 'webgpu'] as const;
export type Provider = (typeof PROVIDERS)[number];

/**
 * Settings for an execution provider: GPU providers get float16 UNets, the CPU keeps float32 (ORT's CPU kernels
 * would widen float16 back anyway). onnxruntime-node must be a build that contains the provider; ORT's own error says
 * so when it is not.
 */
export function providerSettings(provider: Provider): SessionSettings {
  return provider === 'cpu'
    ? { executionProviders: ['cpu'] }
    : { executionProviders: [provider, 'cpu'], float16: true };
}

const NO_SPINNING = { 'intra_op.allow_spinning': '0', 'inter_op.allow_spinning': '0' };

export async function createSession(
  model: string | Uint8Array,
  settings: SessionSettings = {},
): Promise<ort.InferenceSession> {
  const opts: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: settings.graphOptimizationLevel ?? 'all',
    executionProviders: settings.executionProviders ?? ['cpu'],
    // Flush denormals to zero in ORT's threads. CLIP's causal mask leaves most of a softmax row at exp(-1e4 - max):
    // values in the denormal range, which an Intel core handles in microcode assists, 4-5x slower than normal
    // floats (the toy CLIP's softmax took 30% of a forward pass). Values below 1.2e-38 change nothing that matters.
    extra: { session: { set_denormal_as_zero: '1', ...(settings.spinning === false ? NO_SPINNING : {}) } },
  };
  if (settings.intraOpThreads) opts.intraOpNumThreads = settings.intraOpThreads;
  if (settings.enableCpuMemArena !== undefined) opts.enableCpuMemArena = settings.enableCpuMemArena;
  if (typeof model !== 'string') return ort.InferenceSession.create(model, opts);
  if (settings.reuseOptimized === false || opts.graphOptimizationLevel === 'disabled')
    return ort.InferenceSession.create(model, opts);
  return openOptimized(model, opts);
}

let runObserver: ((ms: number) => void) | undefined;

/**
 * Report the wall time of every run() in this process (or thread) to `observer`, or stop with undefined: how the
 * benchmarks tell inference time from pipeline overhead without threading a callback through every pipeline.
 */
export function observeRuns(observer: ((ms: number) => void) | undefined): void {
  runObserver = observer;
}

/** `session.run`, its wall time reported to the observeRuns observer: every pipeline session runs through here. */
export async function observedRun(
  session: ort.InferenceSession,
  feeds: Record<string, ort.Tensor>,
  outputs?: string[],
): Promise<ort.InferenceSession.ReturnType> {
  const started = runObserver ? performance.now() : 0;
  const res = outputs ? await session.run(feeds, outputs) : await session.run(feeds);
  runObserver?.(performance.now() - started);
  return res;
}

function toOrtFeeds(feeds: Record<string, Tensor>): Record<string, ort.Tensor> {
  return Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, toOrt(v)]));
}

/** Run a session on named float/int tensors and return its float outputs. */
export async function run(
  session: ort.InferenceSession,
  feeds: Record<string, Tensor>,
  outputs?: string[],
): Promise<Record<string, F32Tensor>> {
  const res = await observedRun(session, toOrtFeeds(feeds), outputs);
  const out: Record<string, F32Tensor> = {};
  for (const [k, v] of Object.entries(res)) out[k] = fromOrt(v);
  return out;
}

/** `run` for outputs of any element type (float gradients beside int64 row indices). */
export async function runTensors(
  session: ort.InferenceSession,
  feeds: Record<string, Tensor>,
  outputs: string[],
): Promise<Record<string, Tensor>> {
  const res = await observedRun(session, toOrtFeeds(feeds), outputs);
  return Object.fromEntries(Object.entries(res).map(([k, v]) => [k, fromOrtAny(v)]));
}
