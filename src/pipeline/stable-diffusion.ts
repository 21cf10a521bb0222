import type { Config } from '../core/config.js';
import { AdaptedSession } from '../onnx/adapted-session.js';
import type { SessionSettings } from '../onnx/session.js';
import type { F32Tensor } from '../core/tensor.js';
import { denoise, type DenoiseHooks, type DenoiseJob } from './denoise.js';
import { openPipelineSource, type PipelineSource } from './source.js';
import type { PromptEncoder } from './text-encoder.js';
import { Tokenizer } from './tokenizer.js';

/**
 * A loaded Stable Diffusion pipeline: tokenizer, UNet and VAE decoder sessions, and the scheduler config. Text
 * encoders are separate (PromptEncoder) because requests choose them.
 */
export class StableDiffusion {
  private constructor(
    readonly source: PipelineSource,
    readonly tokenizer: Tokenizer,
    private readonly unet: AdaptedSession,
    private readonly vaeDecoder: AdaptedSession,
  ) {}

  /**
   * Load a diffusers folder, a single-file checkpoint (`configDir`: its config folder, if not SD 1.x / 2.x sized)
   * or an ONNX export. Built graphs come from the graph cache (built on first use); exported ones are used as they are.
   */
  static async load(path: string, settings: SessionSettings = {}, configDir?: string): Promise<StableDiffusion> {
    const source = openPipelineSource(path, configDir);
    const unet = await AdaptedSession.create(source.unetModel(settings.float16 ?? false), settings);
    const vae = await AdaptedSession.create(source.vaeDecoderModel(), settings);
    return new StableDiffusion(source, Tokenizer.load(source.tokenizer.dir, source.tokenizer.configFile), unet, vae);
  }

  get schedulerConfig(): Config {
    return this.source.scheduler;
  }

  get crossAttentionDim(): number {
    return this.source.crossAttentionDim;
  }

  get latentChannels(): number {
    return this.source.latentChannels;
  }

  /** Pixels per latent cell: 2^(VAE blocks - 1), 8 for every SD. */
  get vaeScale(): number {
    return this.source.vaeScale;
  }

  /** The size the model was trained at (unet sample_size × vae scale). */
  get nativeSize(): number {
    return this.source.nativeSize;
  }

  /** Refuse an encoder whose hidden states the UNet cannot attend to. */
  checkEncoder(encoder: PromptEncoder, name: string): void {
    if (encoder.hiddenSize !== this.crossAttentionDim) {
      throw new Error(
        `encoder '${name}' (${encoder.dir}) has hidden size ${encoder.hiddenSize}, but the UNet's ` +
          `cross_attention_dim is ${this.crossAttentionDim}`,
      );
    }
  }

  /** One UNet evaluation (what denoise() batches). */
  readonly unetCall = async (sample: F32Tensor, timesteps: Float32Array, states: F32Tensor): Promise<F32Tensor> => {
    const [prediction] = await this.unet.run([
      { names: ['sample'], value: sample },
      { names: ['timestep'], value: { dtype: 'F32', shape: [timesteps.length], data: timesteps }, uniform: true },
      { names: ['encoder_hidden_states'], value: states },
    ]);
    return prediction;
  };

  /** Denoise several jobs in shared UNet calls; see denoise(). */
  denoise(jobs: DenoiseJob[], height: number, width: number, hooks?: DenoiseHooks): Promise<Map<string, Float32Array>> {
    return denoise(jobs, [this.latentChannels, height / this.vaeScale, width / this.vaeScale], this.unetCall, hooks);
  }

  /** Latents [n,C,h,w] (UNet space) to float images [n,H,W,3] in [0,1], as diffusers' output_type='np'. */
  async decode(latents: Float32Array, n: number, height: number, width: number): Promise<F32Tensor> {
    const h = height / this.vaeScale;
    const w = width / this.vaeScale;
    const scale = this.source.decoderInputScale;
    const input = scale === 1 ? latents : latents.map((v) => v * scale);
    const [image] = await this.vaeDecoder.run([
      {
        names: ['latents', 'latent_sample'],
        value: { dtype: 'F32', shape: [n, this.latentChannels, h, w], data: input },
      },
    ]);
    const img = image.data;
    const hw = height * width;
    const nhwc = new Float32Array(n * hw * 3);
    for (let b = 0; b < n; b++) {
      for (let c = 0; c < 3; c++) {
        const src = (b * 3 + c) * hw;
        for (let p = 0; p < hw; p++) {
          const v = img[src + p] / 2 + 0.5;
          nhwc[(b * hw + p) * 3 + c] = Math.min(Math.max(v, 0), 1);
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
