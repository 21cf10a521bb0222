import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { createSession, toOrt } from '../onnx/session.js';
import type { ImageClassifier, RgbImage } from './classifier.js';

/**
 * A JSON description of an ONNX image classifier: how to feed it and how to read it. Lets users plug in NudeNet,
 * Q16 or their own classifier without code.
 */
export interface ClassifierDescriptor {
  name: string;
  /** ONNX file, relative to the descriptor. */
  model: string;
  input: string;
  output: string;
  /** [height, width] the model takes; pictures are resized (bilinear) to it. */
  size: [number, number];
  layout: 'NCHW' | 'NHWC';
  /** Pixel values are mapped to this range before normalisation. */
  range: [number, number];
  mean: [number, number, number];
  std: [number, number, number];
  classes: string[];
  unsafe: string[];
  /** What the output holds: raw scores (softmax or sigmoid applied here) or probabilities already. */
  activation: 'softmax' | 'sigmoid' | 'none';
  /**
   * `argmax`: unsafe when the top class is unsafe; `threshold`: when the unsafe classes' probability sum reaches it.
   */
  rule: 'argmax' | 'threshold';
  threshold: number;
}

function fail(file: string, msg: string): never {
  throw new Error(`${file}: ${msg}`);
}

function numbers(file: string, d: Record<string, unknown>, key: string, n: number): number[] {
  const v = d[key];
  if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number' && Number.isFinite(x)))
    fail(file, `'${key}' must be ${n} numbers`);
  return v as number[];
}

export function readDescriptor(file: string): ClassifierDescriptor & { modelPath: string } {
  let d: Record<string, unknown>;
  try {
    d = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    fail(file, `not a readable JSON classifier descriptor: ${(e as Error).message}`);
  }
  const str = (k: string) =>
    typeof d[k] === 'string' && d[k] ? (d[k] as string) : fail(file, `'${k}' must be a non-empty string`);
  const classes = d.classes;
  if (!Array.isArray(classes) || classes.length === 0 || !classes.every((c) => typeof c === 'string'))
    fail(file, "'classes' must be a list of class names");
  const unsafe = d.unsafe;
  if (!Array.isArray(unsafe) || unsafe.length === 0 || !unsafe.every((c) => classes.includes(c)))
    fail(file, "'unsafe' must list some of 'classes'");
  const layout = d.layout ?? 'NCHW';
  if (layout !== 'NCHW' && layout !== 'NHWC') fail(file, "'layout' must be NCHW or NHWC");
  const activation = d.activation ?? 'softmax';
  if (!['softmax', 'sigmoid', 'none'].includes(activation as string))
    fail(file, "'activation' must be softmax, sigmoid or none");
  const rule = d.rule ?? 'threshold';
  if (rule !== 'argmax' && rule !== 'threshold') fail(file, "'rule' must be argmax or threshold");
  const threshold = d.threshold ?? 0.5;
  if (typeof threshold !== 'number' || !(threshold >= 0 && threshold <= 1))
    fail(file, "'threshold' must be a number in [0, 1]");
  const size = numbers(file, d, 'size', 2);
  if (!size.every((s) => Number.isInteger(s) && s > 0)) fail(file, "'size' must be two positive integers");
  const modelPath = resolve(dirname(file), str('model'));
  if (!existsSync(modelPath)) fail(file, `model file ${modelPath} not found`);
  return {
    name: str('name'),
    model: str('model'),
    modelPath,
    input: str('input'),
    output: str('output'),
    size: size as [number, number],
    layout,
    range: numbers(file, { range: d.range ?? [0, 1] }, 'range', 2) as [number, number],
    mean: numbers(file, { mean: d.mean ?? [0, 0, 0] }, 'mean', 3) as [number, number, number],
    std: numbers(file, { std: d.std ?? [1, 1, 1] }, 'std', 3) as [number, number, number],
    classes: classes as string[],
    unsafe: unsafe as string[],
    activation: activation as ClassifierDescriptor['activation'],
    rule,
    threshold,
  };
}

/** An ONNX image classifier driven by its descriptor. */
export class OnnxClassifier implements ImageClassifier {
  private constructor(
    readonly d: ClassifierDescriptor,
    private readonly session: ort.InferenceSession,
  ) {}

  static async load(descriptorFile: string): Promise<OnnxClassifier> {
    const d = readDescriptor(descriptorFile);
    const session = await createSession(d.modelPath);
    if (!session.inputNames.includes(d.input))
      fail(descriptorFile, `the model has no input '${d.input}' (it has ${session.inputNames.join(', ')})`);
    if (!session.outputNames.includes(d.output))
      fail(descriptorFile, `the model has no output '${d.output}' (it has ${session.outputNames.join(', ')})`);
    return new OnnxClassifier(d, session);
  }

  get name(): string {
    return this.d.name;
  }

  get classes(): readonly string[] {
    return this.d.classes;
  }

  private async pixels(img: RgbImage): Promise<Uint8Array> {
    const [h, w] = this.d.size;
    if (img.width === w && img.height === h) return img.rgb;
    const out = await sharp(img.rgb, { raw: { width: img.width, height: img.height, channels: 3 } })
      .resize(w, h, { fit: 'fill', kernel: 'linear' })
      .raw()
      .toBuffer();
    return new Uint8Array(out);
  }

  async classify(images: RgbImage[]): Promise<Float32Array[]> {
    const [h, w] = this.d.size;
    const plane = h * w;
    const data = new Float32Array(images.length * 3 * plane);
    const [lo, hi] = this.d.range;
    for (let n = 0; n < images.length; n++) {
      const rgb = await this.pixels(images[n]);
      for (let p = 0; p < plane; p++) {
        for (let c = 0; c < 3; c++) {
          const v = (lo + (rgb[p * 3 + c] / 255) * (hi - lo) - this.d.mean[c]) / this.d.std[c];
          data[this.d.layout === 'NCHW' ? (n * 3 + c) * plane + p : (n * plane + p) * 3 + c] = v;
        }
      }
    }
    const shape = this.d.layout === 'NCHW' ? [images.length, 3, h, w] : [images.length, h, w, 3];
    const out = (await this.session.run({ [this.d.input]: toOrt({ dtype: 'F32', shape, data }) }))[this.d.output];
    const k = this.d.classes.length;
    const scores = out.data as Float32Array;
    if (scores.length !== images.length * k)
      throw new Error(`classifier ${this.name}: output holds ${scores.length} values, expected ${images.length}x${k}`);
    return images.map((_, n) => this.activate(scores.slice(n * k, (n + 1) * k)));
  }

  private activate(s: Float32Array): Float32Array {
    if (this.d.activation === 'none') return s;
    if (this.d.activation === 'sigmoid') return s.map((x) => 1 / (1 + Math.exp(-x)));
    const m = Math.max(...s);
    const e = s.map((x) => Math.exp(x - m));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / sum);
  }

  get verdictRule(): string {
    const unsafe = this.d.unsafe.join(', ');
    return this.d.rule === 'argmax'
      ? `top class is one of: ${unsafe}`
      : `probability of ${unsafe} >= ${this.d.threshold}`;
  }

  isUnsafe(probs: Float32Array): boolean {
    const unsafe = this.d.unsafe.map((c) => this.d.classes.indexOf(c));
    if (this.d.rule === 'argmax') return unsafe.includes(probs.indexOf(Math.max(...probs)));
    return unsafe.reduce((a, i) => a + probs[i], 0) >= this.d.threshold;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
