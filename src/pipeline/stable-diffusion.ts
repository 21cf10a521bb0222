import type * as ort from 'onnxruntime-node';
import { contentKey, readDiffusersFolder, type DiffusersFolder } from '../models/diffusers-folder.js';
import { cachedGraph } from '../models/graph-cache.js';
import { loadUnetGraph, parseUnetConfig, type UnetConfig } from '../models/unet.js';
import { buildVaeDecoderGraph, loadVae, readVaeConfig, type VaeConfig } from '../models/vae.js';
import { convertToFloat16 } from '../onnx/fp16.js';
import { createSession, run, type SessionSettings } from '../onnx/session.js';
import type { F32Tensor } from '../models/tensor.js';
import { denoise, type DenoiseHooks, type DenoiseJob } from './denoise.js';
import type { PromptEncoder } from './text-encoder.js';
import { Tokenizer } from './tokenizer.js';

/**
 * A loaded Stable Diffusion pipeline: tokenizer, UNet and VAE decoder sessions, and the scheduler config. Text
 * encoders are separate (PromptEncoder) because requests choose them.
 */
export class StableDiffusion {
  private constructor(
    readonly folder: DiffusersFolder,
    readonly tokenizer: Tokenizer,
    readonly unetConfig: UnetConfig,
    readonly vaeConfig: VaeConfig,
    private readonly unet: ort.InferenceSession,
    private readonly vaeDecoder: ort.InferenceSession,
  ) {}

  /** Load a diffusers folder; the UNet and VAE graphs come from the graph cache (built on first use). */
  static async load(dir: string, settings: SessionSettings = {}): Promise<StableDiffusion> {
    const folder = readDiffusersFolder(dir);
    const { unet, vae, tokenizer } = folder.components;
    const unetConfig = parseUnetConfig(unet.config);
    const vaeConfig = readVaeConfig(vae.config);
    const unetPath = settings.float16
      ? cachedGraph('unet-fp16', contentKey(unet), () => convertToFloat16(loadUnetGraph(unet.dir)))
      : cachedGraph('unet', contentKey(unet), () => loadUnetGraph(unet.dir));
    const vaePath = cachedGraph('vae-decoder', contentKey(vae), () => {
      const { config, weights } = loadVae(vae.dir);
      try {
        return buildVaeDecoderGraph(config, weights);
      } finally {
        weights.close();
      }
    });
    const [unetSession, vaeSession] = [await createSession(unetPath, settings), await createSession(vaePath, settings)];
    return new StableDiffusion(folder, Tokenizer.load(tokenizer.dir), unetConfig, vaeConfig, unetSession, vaeSession);
  }

  get crossAttentionDim(): number {
    return this.unetConfig.crossAttentionDim;
  }

  get latentChannels(): number {
    return this.unetConfig.inChannels;
  }

  /** Pixels per latent cell: 2^(VAE blocks - 1), 8 for every SD. */
  get vaeScale(): number {
    return 2 ** (this.vaeConfig.blockOutChannels.length - 1);
  }

  /** The size the model was trained at (unet sample_size × vae scale). */
  get nativeSize(): number {
    return this.folder.components.unet.config.int('sample_size', 64) * this.vaeScale;
  }

  /** Refuse an encoder whose hidden states the UNet cannot attend to. */
  checkEncoder(encoder: PromptEncoder, name: string): void {
    if (encoder.hiddenSize !== this.crossAttentionDim) {
      throw new Error(`encoder '${name}' (${encoder.dir}) has hidden size ${encoder.hiddenSize}, but the UNet's cross_attention_dim is ${this.crossAttentionDim}`);
    }
  }

  /** One UNet evaluation (what denoise() batches). */
  readonly unetCall = async (sample: F32Tensor, timesteps: Float32Array, states: F32Tensor): Promise<F32Tensor> => {
    const out = await run(this.unet, {
      sample,
      timestep: { dtype: 'F32', shape: [timesteps.length], data: timesteps },
      encoder_hidden_states: states,
    });
    return out.out_sample;
  };

  /** Denoise several jobs in shared UNet calls; see denoise(). */
  denoise(jobs: DenoiseJob[], height: number, width: number, hooks?: DenoiseHooks): Promise<Map<string, Float32Array>> {
    return denoise(jobs, [this.latentChannels, height / this.vaeScale, width / this.vaeScale], this.unetCall, hooks);
  }

  /** Latents [n,C,h,w] (UNet space) to float images [n,H,W,3] in [0,1], as diffusers' output_type='np'. */
  async decode(latents: Float32Array, n: number, height: number, width: number): Promise<F32Tensor> {
    const h = height / this.vaeScale;
    const w = width / this.vaeScale;
    const out = await run(this.vaeDecoder, { latents: { dtype: 'F32', shape: [n, this.latentChannels, h, w], data: latents } });
    const img = out.image.data;
    const hw = height * width;
    const nhwc = new Float32Array(n * hw * 3);
    for (let b = 0; b < n; b++) {
      for (let c = 0; c < 3; c++) {
        const src = (b * 3 + c) * hw;
        for (let p = 0; p < hw; p++) {
          const v = img[src + p] / 2 + 0.5;
          nhwc[(b * hw + p) * 3 + c] = v < 0 ? 0 : v > 1 ? 1 : v;
        }
      }
    }
    return { dtype: 'F32', shape: [n, height, width, 3], data: nhwc };
  }

  async close(): Promise<void> {
    await this.unet.release();
    await this.vaeDecoder.release();
  }
}
