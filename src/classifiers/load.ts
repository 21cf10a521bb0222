import { existsSync } from 'node:fs';
import type { ImageClassifier } from './classifier.js';
import { NsfwjsClassifier, parseNsfwjsSpec } from './nsfwjs.js';
import { OnnxClassifier } from './onnx-classifier.js';

/** Loads `nsfwjs[:threshold]` or an ONNX classifier descriptor file; all or none (the loaded ones are closed). */
export async function loadClassifiers(specs: string[]): Promise<ImageClassifier[]> {
  const out: ImageClassifier[] = [];
  try {
    for (const spec of specs) {
      const nsfw = parseNsfwjsSpec(spec);
      if (nsfw) out.push(await NsfwjsClassifier.load(nsfw.threshold));
      else if (existsSync(spec)) out.push(await OnnxClassifier.load(spec));
      else throw new Error(`classifier '${spec}' is neither 'nsfwjs[:threshold]' nor an existing descriptor file`);
    }
  } catch (e) {
    for (const c of out) await c.close();
    throw e;
  }
  return out;
}
