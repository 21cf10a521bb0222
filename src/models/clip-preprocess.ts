import sharp, { type OutputInfo } from 'sharp';
import { f32, type F32Tensor } from '../core/tensor.js';

/** CLIPImageProcessor's defaults: the normalisation openai CLIP was trained with. */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

/** transformers' shortest-edge rule: the short side becomes `size`, the long side is scaled and truncated. */
export function shortestEdgeSize(width: number, height: number, size: number): { width: number; height: number } {
  return width <= height
    ? { width: size, height: Math.trunc((size * height) / width) }
    : { width: Math.trunc((size * width) / height), height: size };
}

/** Keys' cubic with a = -0.5, the kernel PIL calls BICUBIC. */
function bicubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Taps {
  start: Int32Array;
  count: Int32Array;
  /** `width` fixed-point weights per output sample, with `bits` fraction bits. */
  weights: Int32Array;
  width: number;
  bits: number;
}

/**
 * Per output sample, the input samples it mixes and their weights, as PIL's Resample.c and torch's uint8
 * antialiased resize compute them: pixel centres at +0.5, the kernel stretched by the scale when shrinking
 * (antialiasing), weights normalised, then rounded to int16 fixed point with as many fraction bits as the largest
 * weight allows (torch's rule; transformers 5's CLIPImageProcessor resizes through it, and the goldens match it
 * exactly where PIL's 22-bit weights are off by up to two levels).
 */
function taps(inSize: number, outSize: number): Taps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const width = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const normalised = new Float64Array(outSize * width);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const n = Math.min(Math.trunc(center + support + 0.5), inSize) - lo;
    let total = 0;
    for (let i = 0; i < n; i++) total += normalised[o * width + i] = bicubic((i + lo - center + 0.5) / filterScale);
    if (total !== 0) for (let i = 0; i < n; i++) normalised[o * width + i] /= total;
    start[o] = lo;
    count[o] = n;
  }
  let maxWeight = 0;
  for (const w of normalised) maxWeight = Math.max(maxWeight, w);
  let bits = 0;
  while (bits < 15 && Math.trunc(0.5 + maxWeight * 2 ** (bits + 1)) < 2 ** 15) bits++;
  const weights = new Int32Array(normalised.length);
  for (let j = 0; j < normalised.length; j++) {
    const w = normalised[j];
    weights[j] = Math.trunc(w * 2 ** bits + (w < 0 ? -0.5 : 0.5));
  }
  return { start, count, weights, width, bits };
}

/** One separable pass over packed RGB: `lines` lines, input samples `sampleStep` apart and lines `lineStep` apart. */
function resamplePass(
  src: Uint8Array,
  t: Taps,
  dst: Uint8Array,
  lines: number,
  outSize: number,
  sampleStep: number,
  lineStep: number,
  outSampleStep: number,
  outLineStep: number,
): void {
  for (let line = 0; line < lines; line++) {
    for (let o = 0; o < outSize; o++) {
      for (let c = 0; c < 3; c++) {
        // Integer sums: a rounding half, then a shift (exact in doubles: 255 * 2^15 * taps is far below 2^53).
        let acc = 2 ** (t.bits - 1);
        for (let i = 0; i < t.count[o]; i++)
          acc += src[line * lineStep + (t.start[o] + i) * sampleStep + c] * t.weights[o * t.width + i];
        dst[line * outLineStep + o * outSampleStep + c] = Math.min(255, Math.max(0, Math.floor(acc / 2 ** t.bits)));
      }
    }
  }
}

/** Bicubic resize of packed RGB: horizontal pass, then vertical, each rounded to 8 bits, as PIL and torch do. */
export function resizeBicubic(
  rgb: Uint8Array,
  width: number,
  height: number,
  outWidth: number,
  outHeight: number,
): Uint8Array {
  let src = rgb;
  let w = width;
  if (outWidth !== width) {
    const dst = new Uint8Array(outWidth * height * 3);
    resamplePass(src, taps(width, outWidth), dst, height, outWidth, 3, width * 3, 3, outWidth * 3);
    src = dst;
    w = outWidth;
  }
  if (outHeight !== height) {
    const dst = new Uint8Array(w * outHeight * 3);
    resamplePass(src, taps(height, outHeight), dst, w, outHeight, w * 3, 3, w * 3, 3);
    src = dst;
  }
  return src;
}

/**
 * An image file or buffer as CLIP pixel values [3, size, size], as CLIPImageProcessor makes them: shortest side
 * resized to `size` (bicubic, antialiased), centre crop, /255, CLIP mean/std. sharp only decodes (to sRGB, alpha
 * dropped).
 */
export async function clipPreprocess(input: string | Buffer, size: number): Promise<F32Tensor> {
  const what = typeof input === 'string' ? input : 'image';
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    decoded = await sharp(input).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new Error(`${what}: cannot decode the image: ${(e as Error).message}`);
  }
  const { data, info } = decoded;
  if (info.channels !== 3)
    throw new Error(`${what}: expected 3 colour channels after conversion, got ${info.channels}`);
  const resized = shortestEdgeSize(info.width, info.height, size);
  const pixels = resizeBicubic(
    new Uint8Array(data.buffer, data.byteOffset, data.length),
    info.width,
    info.height,
    resized.width,
    resized.height,
  );
  const left = Math.floor((resized.width - size) / 2);
  const top = Math.floor((resized.height - size) / 2);
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const from = ((top + y) * resized.width + left + x) * 3;
      for (let c = 0; c < 3; c++) out[c * plane + y * size + x] = (pixels[from + c] / 255 - CLIP_MEAN[c]) / CLIP_STD[c];
    }
  }
  return f32(out, [3, size, size]);
}
