/**
 * nsfwjs (infinitered) as an image classifier: its bundled MobileNetV2 graph, loaded from the package's own files
 * (no network), run by @tensorflow/tfjs on the wasm backend (the .wasm binaries are read from the installed
 * @tensorflow/tfjs-backend-wasm package).
 *
 * Classes: Drawing, Hentai, Neutral, Porn, Sexy. An image counts as unsafe when P(Porn) + P(Hentai) + P(Sexy)
 * exceeds the threshold (default 0.5: the unsafe classes together are more likely than the safe ones).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { load, type NSFWJS } from 'nsfwjs';
import type { RgbImage } from './classifier.js';

export const NSFWJS_CLASSES = ['Drawing', 'Hentai', 'Neutral', 'Porn', 'Sexy'] as const;
const UNSAFE = new Set(['Hentai', 'Porn', 'Sexy']);
export const NSFWJS_DEFAULT_THRESHOLD = 0.5;

/** Decoded 8-bit RGB pixels, row-major [height, width, 3]. */
let backend: Promise<void> | undefined;
function wasmBackend(): Promise<void> {
  backend ??= (async () => {
    const require = createRequire(import.meta.url);
    const dist = join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
    // A directory prefix (with its trailing slash): the backend appends the binary's name it picks (simd or not).
    setWasmPaths(`${dist}/`);
    if (!(await tf.setBackend('wasm')))
      throw new Error(`nsfwjs: the tfjs wasm backend did not start (binaries in ${dist})`);
    await tf.ready();
  })();
  return backend;
}

/** `nsfwjs` or `nsfwjs:<threshold>` on the command line. */
export function parseNsfwjsSpec(spec: string): { threshold: number } | undefined {
  const m = /^nsfwjs(?::(.*))?$/.exec(spec);
  if (!m) return undefined;
  if (m[1] === undefined) return { threshold: NSFWJS_DEFAULT_THRESHOLD };
  const t = Number(m[1]);
  if (m[1].trim() === '' || !(t >= 0 && t < 1))
    throw new Error(`classifier '${spec}': the threshold after 'nsfwjs:' must be a number in [0, 1)`);
  return { threshold: t };
}

export class NsfwjsClassifier {
  readonly name = 'nsfwjs';
  readonly classes: readonly string[] = NSFWJS_CLASSES;

  private constructor(
    private readonly model: NSFWJS,
    readonly threshold: number,
  ) {}

  static async load(threshold = NSFWJS_DEFAULT_THRESHOLD): Promise<NsfwjsClassifier> {
    await wasmBackend();
    // nsfwjs announces the model it loads on console.info; that would break the progress bar.
    const info = console.info;
    console.info = () => {};
    try {
      return new NsfwjsClassifier(await load('MobileNetV2'), threshold);
    } finally {
      console.info = info;
    }
  }

  /** Class probabilities (softmax, in NSFWJS_CLASSES order) per image. */
  async classify(images: RgbImage[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (const img of images) {
      if (img.rgb.length !== img.width * img.height * 3)
        throw new Error(`nsfwjs: ${img.rgb.length} bytes are not a ${img.width}x${img.height} RGB image`);
      // As nsfwjs sees a decoded picture: bytes, then its own /255 and bilinear resize to 224.
      const pixels = tf.tensor3d(Int32Array.from(img.rgb), [img.height, img.width, 3], 'int32');
      const probs = this.model.infer(pixels);
      out.push(Float32Array.from(await probs.data()));
      pixels.dispose();
      probs.dispose();
    }
    return out;
  }

  unsafeScore(probs: Float32Array): number {
    let s = 0;
    NSFWJS_CLASSES.forEach((c, i) => {
      if (UNSAFE.has(c)) s += probs[i];
    });
    return s;
  }

  get verdictRule(): string {
    return `probability of ${[...UNSAFE].join(', ')} > ${this.threshold}`;
  }

  isUnsafe(probs: Float32Array): boolean {
    return this.unsafeScore(probs) > this.threshold;
  }

  async close(): Promise<void> {
    this.model.dispose();
  }
}
