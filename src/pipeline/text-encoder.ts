import { ClipTextEncoder, loadClip } from '../models/clip-loader.js';
import { textTowerPrefix } from '../models/clip.js';
import type { SessionSettings } from '../onnx/session.js';
import type { F32Tensor } from '../models/tensor.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * A text encoder as the pipeline uses it: prompts in, [n, 77, hidden] conditioning out, with clip skip applied the
 * way diffusers does (an earlier layer's hidden state through the final layer norm).
 */
export class PromptEncoder {
  private constructor(
    readonly dir: string,
    readonly clip: ClipTextEncoder,
    private readonly finalNorm: { weight: Float32Array; bias: Float32Array; eps: number },
  ) {}

  static async load(dir: string, settings: SessionSettings = {}): Promise<PromptEncoder> {
    const loaded = loadClip(dir);
    try {
      if (!loaded.textConfig) throw new Error(`${dir}: a ${loaded.kind} has no text tower`);
      const prefix = textTowerPrefix(loaded.weights);
      const key = (k: string) => (prefix ? `${prefix}.final_layer_norm.${k}` : `final_layer_norm.${k}`);
      const finalNorm = { weight: loaded.weights.get(key('weight')).data, bias: loaded.weights.get(key('bias')).data, eps: loaded.textConfig.layerNormEps };
      return new PromptEncoder(dir, await ClipTextEncoder.create(loaded, settings), finalNorm);
    } finally {
      loaded.weights.close();
    }
  }

  get hiddenSize(): number {
    return this.clip.hiddenSize;
  }

  get layers(): number {
    return this.clip.config.layers;
  }

  /**
   * Conditioning for each prompt. `clipSkip` counts as A1111 and our CLI do: 0 or 1 = the last layer, 2 = the
   * penultimate (diffusers' clip_skip=1), and so on.
   */
  async encode(tokenizer: Tokenizer, prompts: string[], clipSkip = 0): Promise<{ embeds: F32Tensor; warnings: string[] }> {
    const warnings: string[] = [];
    const S = tokenizer.maxLength;
    const ids = new BigInt64Array(prompts.length * S);
    prompts.forEach((p, i) => {
      const e = tokenizer.encode(p);
      if (e.truncated) {
        warnings.push(`The following part of your input was truncated because CLIP can only handle sequences up to ${S} tokens: ${e.removedText}`);
      }
      e.inputIds.forEach((id, j) => (ids[i * S + j] = BigInt(id)));
    });
    const out = await this.clip.encode(ids, S);
    if (clipSkip <= 1) return { embeds: out.lastHidden, warnings };
    if (clipSkip > this.layers) throw new Error(`clip skip ${clipSkip} is more than the encoder's ${this.layers} layers`);
    const h = out.hiddenStates[this.layers - (clipSkip - 1)];
    return { embeds: { dtype: 'F32', shape: h.shape, data: this.layerNorm(h.data) }, warnings };
  }

  private layerNorm(x: Float32Array): Float32Array {
    const { weight, bias, eps } = this.finalNorm;
    const D = weight.length;
    const out = new Float32Array(x.length);
    for (let row = 0; row < x.length; row += D) {
      let mean = 0;
      for (let i = 0; i < D; i++) mean += x[row + i];
      mean /= D;
      let v = 0;
      for (let i = 0; i < D; i++) v += (x[row + i] - mean) ** 2;
      const inv = 1 / Math.sqrt(v / D + eps);
      for (let i = 0; i < D; i++) out[row + i] = (x[row + i] - mean) * inv * weight[i] + bias[i];
    }
    return out;
  }

  async close(): Promise<void> {
    await this.clip.session.release();
  }
}
