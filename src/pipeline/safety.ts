/**
 * The safety check of a pipeline: a classifier named in the manifest judges every generated image, and the
 * pipeline's action decides what the client gets: the image with its verdict (`flag`), a strong blur of a flagged
 * image (`blur`), or no image (`refuse`). Runs where the images are made, so every transport returns the same.
 */
import sharp from 'sharp';
import type { ImageClassifier, RgbImage } from '../classifiers/classifier.js';
import { loadClassifiers } from '../classifiers/load.js';

export const SAFETY_ACTIONS = ['flag', 'blur', 'refuse'] as const;
export type SafetyAction = (typeof SAFETY_ACTIONS)[number];

export interface SafetySettings {
  /** `nsfwjs`, `nsfwjs:<threshold>`, or the absolute path of an ONNX classifier descriptor (JSON). */
  classifier: string;
  action: SafetyAction;
}

export interface SafetyVerdict {
  /** The classifier's name (`nsfwjs`, or the descriptor's `name`). */
  classifier: string;
  flagged: boolean;
  /** Class name → probability. */
  scores: Record<string, number>;
  action: SafetyAction;
  /** What the client gets: the image as made, blurred, or none. */
  delivered: 'image' | 'blurred' | 'none';
  /** One readable line when flagged: which classes, what was done. */
  reason: string;
}

/** Gaussian blur strong enough that no detail survives: sigma a sixth of the larger side. */
async function blurRgb(img: RgbImage): Promise<Uint8Array> {
  const sigma = Math.max(0.3, Math.max(img.width, img.height) / 6);
  const raw = { width: img.width, height: img.height, channels: 3 as const };
  return new Uint8Array(await sharp(img.rgb, { raw }).blur(sigma).raw().toBuffer());
}

export interface CheckedImage {
  /** The pixels to encode, or undefined when the image is refused. */
  rgb: Uint8Array | undefined;
  verdict: SafetyVerdict;
}

export class SafetyCheck {
  constructor(
    private readonly classifier: ImageClassifier,
    readonly action: SafetyAction,
  ) {}

  static async load(settings: SafetySettings): Promise<SafetyCheck> {
    const [classifier] = await loadClassifiers([settings.classifier]);
    return new SafetyCheck(classifier!, settings.action);
  }

  /** Judge the images and apply the action to the flagged ones. */
  async check(images: RgbImage[]): Promise<CheckedImage[]> {
    const probs = await this.classifier.classify(images);
    return Promise.all(
      images.map(async (img, i) => {
        const p = probs[i]!;
        const scores = Object.fromEntries(this.classifier.classes.map((c, k) => [c, p[k]!]));
        const flagged = this.classifier.isUnsafe(p);
        const delivered = !flagged || this.action === 'flag' ? 'image' : this.action === 'blur' ? 'blurred' : 'none';
        const verdict: SafetyVerdict = {
          classifier: this.classifier.name,
          flagged,
          scores,
          action: this.action,
          delivered,
          reason: flagged ? this.reason(scores, delivered) : '',
        };
        const rgb = delivered === 'image' ? img.rgb : delivered === 'blurred' ? await blurRgb(img) : undefined;
        return { rgb, verdict };
      }),
    );
  }

  private reason(scores: Record<string, number>, delivered: SafetyVerdict['delivered']): string {
    const top = Object.entries(scores)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 2)
      .map(([c, s]) => `${c} ${s.toFixed(2)}`)
      .join(', ');
    const what = { image: 'returned as made', blurred: 'blurred', none: 'withheld' }[delivered];
    return `flagged as unsafe by ${this.classifier.name} (${top}); image ${what}`;
  }

  close(): Promise<void> {
    return this.classifier.close();
  }
}
