/**
 * Feature extractors for the Fréchet distance:
 * - `clip`: FD-CLIP, the CLIP vision tower's projected `image_embeds` (not normalised) of the evaluation's CLIP
 *   model (clipscore.ts), with CLIP's own preprocessing;
 * - `inception`: an ONNX export of pytorch-fid's InceptionV3 (pool3, 2048 features) given with `--fid-model`. It is
 *   fed as pytorch-fid feeds its module: RGB in [0, 1], NCHW, resized to 299×299 bilinearly (F.interpolate,
 *   align_corners=False, no antialiasing); the [-1, 1] scaling is inside the exported module. The first output,
 *   flattened per image ([N, 2048, 1, 1] → [N, 2048]), is the feature vector.
 */
import { readFileSync } from 'node:fs';
import type * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { createSession, toOrt } from '../onnx/session.js';
import type { ClipModel } from './clipscore.js';

export interface FeatureExtractor {
  /** Names the features, for the report and the reference-statistics cache key. */
  readonly id: string;
  features(images: Array<string | Buffer>): Promise<Float32Array[]>;
}

export function clipFeatures(clip: ClipModel): FeatureExtractor {
  return { id: `clip-image-embeds:${clip.dir}`, features: (images) => clip.imageEmbeds(images) };
}

const INCEPTION_SIZE = 299;
const BATCH = 16;

/** Decode an image file or buffer to 8-bit RGB (sRGB, alpha dropped). */
export async function decodeRgb(input: string | Buffer): Promise<{ rgb: Uint8Array; width: number; height: number }> {
  try {
    const { data, info } = await sharp(input)
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (e) {
    throw new Error(`${typeof input === 'string' ? input : 'image'}: cannot decode the image: ${(e as Error).message}`);
  }
}

/** torch's bilinear F.interpolate (align_corners=False) of HWC bytes/255 into a CHW plane set of `size`². */
export function bilinearChw(
  rgb: Uint8Array,
  width: number,
  height: number,
  size: number,
  out: Float32Array,
  offset: number,
): void {
  const plane = size * size;
  const src = (y: number, x: number, c: number) => rgb[(y * width + x) * 3 + c] / 255;
  const coord = (o: number, inSize: number) => {
    const s = Math.max((o + 0.5) * (inSize / size) - 0.5, 0);
    const i0 = Math.min(Math.floor(s), inSize - 1);
    return { i0, i1: Math.min(i0 + 1, inSize - 1), f: s - i0 };
  };
  for (let y = 0; y < size; y++) {
    const cy = coord(y, height);
    for (let x = 0; x < size; x++) {
      const cx = coord(x, width);
      for (let c = 0; c < 3; c++) {
        const top = src(cy.i0, cx.i0, c) * (1 - cx.f) + src(cy.i0, cx.i1, c) * cx.f;
        const bottom = src(cy.i1, cx.i0, c) * (1 - cx.f) + src(cy.i1, cx.i1, c) * cx.f;
        out[offset + c * plane + y * size + x] = top * (1 - cy.f) + bottom * cy.f;
      }
    }
  }
}

export async function inceptionFeatures(modelFile: string): Promise<FeatureExtractor> {
  let session: ort.InferenceSession;
  try {
    session = await createSession(readFileSync(modelFile));
  } catch (e) {
    throw new Error(`--fid-model ${modelFile}: cannot load the ONNX model: ${(e as Error).message}`);
  }
  const input = session.inputNames[0];
  const output = session.outputNames[0];
  const plane = 3 * INCEPTION_SIZE * INCEPTION_SIZE;
  return {
    id: `inception-onnx:${modelFile}`,
    async features(images) {
      const out: Float32Array[] = [];
      for (let i = 0; i < images.length; i += BATCH) {
        const chunk = await Promise.all(images.slice(i, i + BATCH).map(decodeRgb));
        const data = new Float32Array(chunk.length * plane);
        chunk.forEach((img, k) => {
          bilinearChw(img.rgb, img.width, img.height, INCEPTION_SIZE, data, k * plane);
        });
        const res = await session.run({
          [input]: toOrt({ dtype: 'F32', shape: [chunk.length, 3, INCEPTION_SIZE, INCEPTION_SIZE], data }),
        });
        const feats = res[output].data as Float32Array;
        const d = feats.length / chunk.length;
        for (let k = 0; k < chunk.length; k++) out.push(feats.slice(k * d, (k + 1) * d));
      }
      return out;
    },
  };
}
