import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { createSession } from '../onnx/session.js';

/** How an ONNX image classifier is fed and read, kept beside the model as JSON. */
export interface ClassifierDescriptor {
  /** ONNX file, relative to the descriptor. */
  model: string;
  input: string;
  output: string;
  /** Square input side in pixels. */
  size: number;
  layout: 'NCHW' | 'NHWC';
  /** The range 8-bit pixels are mapped to before mean/std. */
  range: [0, 1] | [0, 255] | [-1, 1];
  /** Per RGB channel, applied after the range: (x − mean) / std. */
  mean: [number, number, number];
  std: [number, number, number];
  /** Channel order the model expects. */
  channels: 'RGB' | 'BGR';
  classes: string[];
  unsafe: string[];
  /** An image is flagged when the summed probability of the unsafe classes reaches this. */
  threshold: number;
  outputKind: 'logits' | 'probabilities';
}

/** N square RGB images, row-major [N, H, W, 3]: 8-bit, or floats already in [0, 1]. */
export interface ImageBatch {
  data: Uint8Array | Float32Array;
  n: number;
  height: number;
  width: number;
}

export interface Classification {
  /** [N, classes] probabilities. */
  probs: Float32Array;
  flagged: boolean[];
}

const RANGES = ['[0,1]', '[0,255]', '[-1,1]'];

/** Read and check a descriptor; every complaint names the file and the key. */
export function readDescriptor(path: string): ClassifierDescriptor & { modelPath: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: cannot read classifier descriptor: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${path}: classifier descriptor is not a JSON object`);
  const r = raw as Record<string, unknown>;
  const bad = (key: string, want: string): never => {
    throw new Error(`${path}: "${key}" must be ${want}, got ${JSON.stringify(r[key])}`);
  };
  const str = (k: string) => (typeof r[k] === 'string' && r[k] ? (r[k] as string) : bad(k, 'a non-empty string'));
  const nums = (k: string, len: number) =>
    Array.isArray(r[k]) && r[k].length === len && r[k].every((x) => typeof x === 'number' && Number.isFinite(x)) ? (r[k] as number[]) : bad(k, `a list of ${len} numbers`);
  const strs = (k: string) => (Array.isArray(r[k]) && r[k].every((x) => typeof x === 'string') ? (r[k] as string[]) : bad(k, 'a list of strings'));
  const oneOf = <T extends string>(k: string, opts: T[]) => (opts.includes(r[k] as T) ? (r[k] as T) : bad(k, `one of ${opts.join(', ')}`));
  const size = Number.isSafeInteger(r.size) && (r.size as number) > 0 ? (r.size as number) : bad('size', 'a positive integer');
  const range = nums('range', 2);
  if (!RANGES.includes(JSON.stringify(range))) bad('range', `one of ${RANGES.join(', ')}`);
  const std = nums('std', 3);
  if (std.some((s) => s === 0)) bad('std', 'non-zero');
  const classes = strs('classes');
  if (classes.length < 2) bad('classes', 'at least two class names');
  const unsafe = strs('unsafe');
  for (const u of unsafe) if (!classes.includes(u)) throw new Error(`${path}: unsafe class ${JSON.stringify(u)} is not among the classes (${classes.join(', ')})`);
  const threshold = typeof r.threshold === 'number' && r.threshold > 0 && r.threshold <= 1 ? r.threshold : bad('threshold', 'a number in (0, 1]');
  const d: ClassifierDescriptor = {
    model: str('model'),
    input: str('input'),
    output: str('output'),
    size,
    layout: oneOf('layout', ['NCHW', 'NHWC']),
    range: range as ClassifierDescriptor['range'],
    mean: nums('mean', 3) as ClassifierDescriptor['mean'],
    std: std as ClassifierDescriptor['std'],
    channels: r.channels === undefined ? 'RGB' : oneOf('channels', ['RGB', 'BGR']),
    classes,
    unsafe,
    threshold,
    outputKind: oneOf('outputKind', ['logits', 'probabilities']),
  };
  return { ...d, modelPath: resolve(dirname(path), d.model) };
}

export class ImageClassifier {
  private constructor(
    readonly descriptor: ClassifierDescriptor,
    private readonly session: ort.InferenceSession,
  ) {}

  static async load(descriptorPath: string): Promise<ImageClassifier> {
    const d = readDescriptor(descriptorPath);
    let session: ort.InferenceSession;
    try {
      session = await createSession(d.modelPath);
    } catch (e) {
      throw new Error(`${descriptorPath}: cannot load model ${d.modelPath}: ${(e as Error).message.split('\n')[0]}`);
    }
    if (!session.inputNames.includes(d.input)) throw new Error(`${descriptorPath}: model has no input "${d.input}" (inputs: ${session.inputNames.join(', ')})`);
    if (!session.outputNames.includes(d.output)) throw new Error(`${descriptorPath}: model has no output "${d.output}" (outputs: ${session.outputNames.join(', ')})`);
    return new ImageClassifier(d, session);
  }

  /** The batch in the model's layout, range and normalisation. */
  private preprocess(images: ImageBatch): Float32Array {
    const d = this.descriptor;
    const { n, height, width, data } = images;
    if (height !== d.size || width !== d.size) throw new Error(`classifier wants ${d.size}×${d.size} images, got ${width}×${height} (resize first)`);
    if (data.length !== n * height * width * 3) throw new Error(`image batch: ${data.length} values do not fill [${n}, ${height}, ${width}, 3]`);
    const toUnit = data instanceof Uint8Array ? 1 / 255 : 1;
    const [lo, hi] = d.range;
    const hw = height * width;
    const out = new Float32Array(data.length);
    for (let b = 0; b < n; b++) {
      for (let p = 0; p < hw; p++) {
        for (let c = 0; c < 3; c++) {
          const src = d.channels === 'BGR' ? 2 - c : c;
          const v = lo + (hi - lo) * data[(b * hw + p) * 3 + src] * toUnit;
          const dst = d.layout === 'NCHW' ? (b * 3 + c) * hw + p : (b * hw + p) * 3 + c;
          out[dst] = (v - d.mean[c]) / d.std[c];
        }
      }
    }
    return out;
  }

  async classify(images: ImageBatch): Promise<Classification> {
    const d = this.descriptor;
    const s = d.size;
    const dims = d.layout === 'NCHW' ? [images.n, 3, s, s] : [images.n, s, s, 3];
    const res = await this.session.run({ [d.input]: new ort.Tensor('float32', this.preprocess(images), dims) });
    const out = res[d.output];
    const k = d.classes.length;
    if (out.dims.length !== 2 || out.dims[0] !== images.n || out.dims[1] !== k) {
      throw new Error(`classifier output ${d.output} is [${out.dims}], expected [${images.n}, ${k}] (one score per class)`);
    }
    const probs = Float32Array.from(out.data as Float32Array);
    if (d.outputKind === 'logits') for (let b = 0; b < images.n; b++) softmaxInPlace(probs.subarray(b * k, (b + 1) * k));
    const unsafeIdx = d.unsafe.map((u) => d.classes.indexOf(u));
    const flagged = Array.from({ length: images.n }, (_, b) => unsafeIdx.reduce((acc, i) => acc + probs[b * k + i], 0) >= d.threshold);
    return { probs, flagged };
  }
}

function softmaxInPlace(x: Float32Array): void {
  let max = -Infinity;
  for (const v of x) max = Math.max(max, v);
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += x[i] = Math.exp(x[i] - max);
  for (let i = 0; i < x.length; i++) x[i] /= sum;
}
