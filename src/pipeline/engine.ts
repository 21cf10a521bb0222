import { basename } from 'node:path';
import type { SessionSettings } from '../onnx/session.js';
import type { F32Tensor } from '../core/tensor.js';
import { concat, type DenoiseJob } from './denoise.js';
import {
  InvalidRequestError,
  batchKey,
  type BatchJob,
  type Engine,
  type EngineHooks,
  type GeneratedImage,
  type GenerationRequest,
  type JobOutcome,
  type ModelsInfo,
  type PartialRequest,
} from './engine-api.js';
import {
  DEFAULT_MANIFEST,
  pipelineLimits,
  readManifest,
  type EncoderEntry,
  type Manifest,
  type PipelineEntry,
} from './manifest.js';
import { encodePng, imagesToBytes } from '../core/png.js';
import { TorchGenerator } from '../core/torch-generator.js';
import { CleanEstimate, latentRgbFor, latentsToRgb, type LatentRgb } from './preview.js';
import { SafetyCheck, type SafetyVerdict } from './safety.js';
import { requireFiniteImages } from './finite-output.js';
import { createScheduler, maxStepCounts } from './schedulers/index.js';
import { LIMITS, resolveRequest } from './request.js';
import { describeEncoder, openPipelineSource } from './source.js';
import { StableDiffusion } from './stable-diffusion.js';
import { PromptEncoder } from './text-encoder.js';

export interface EngineOptions {
  manifest?: string | Manifest;
  /** Text encoders kept loaded at once; the least recently used is released past this. */
  maxEncoders?: number;
  session?: SessionSettings;
}

/**
 * The generation engine of one process (or worker thread): pipelines from a manifest, loaded on first use and kept;
 * text encoders loaded lazily into a bounded cache.
 */
export class LocalEngine implements Engine {
  private readonly pipelines = new Map<string, Promise<StableDiffusion>>();
  private readonly encoders = new Map<string, Promise<PromptEncoder>>();
  private readonly safetyChecks = new Map<string, Promise<SafetyCheck>>();
  private readonly latentRgb = new Map<string, LatentRgb | undefined>();
  private readonly info: ModelsInfo;

  constructor(
    readonly manifest: Manifest,
    private readonly opts: EngineOptions = {},
  ) {
    this.info = { defaultPipeline: manifest.defaultPipeline, pipelines: [], encoders: [] };
    for (const p of manifest.pipelines) {
      const source = openPipelineSource(p.path, p.config);
      const cross = source.crossAttentionDim;
      const rgb = latentRgbFor(source.path, source.latentChannels);
      this.latentRgb.set(p.name, rgb);
      const safety = p.safety && { classifier: classifierName(p.safety.classifier), action: p.safety.action };
      this.info.pipelines.push({
        name: p.name,
        defaultEncoder: p.defaultEncoder,
        defaultWidth: p.defaults.width,
        defaultHeight: p.defaults.height,
        defaultSteps: p.defaults.steps,
        defaultGuidanceScale: p.defaults.guidanceScale,
        defaultScheduler: p.defaults.scheduler,
        crossAttentionDim: cross,
        safety,
        previews: rgb !== undefined && (!p.safety || p.safety.action === 'flag'),
        limits: pipelineLimits(p.limits, source.nativeSize),
        maxSteps: maxStepCounts(source.scheduler, LIMITS.maxSteps),
      });
      for (const e of p.encoders) {
        const { hiddenSize: hidden, layers } = describeEncoder(e.path, e.config);
        if (hidden !== source.crossAttentionDim) {
          throw new Error(
            `${manifest.file}: encoder '${e.name}' of pipeline '${p.name}' has hidden size ${hidden}, but the ` +
              `UNet's cross_attention_dim is ${source.crossAttentionDim}`,
          );
        }
        this.info.encoders.push({
          name: e.name,
          pipeline: p.name,
          hiddenSize: hidden,
          source: e.source,
          safeClip: e.safeClip,
          layers,
        });
      }
    }
  }

  models(): ModelsInfo {
    return this.info;
  }

  private entry(name: string): PipelineEntry {
    const p = this.manifest.pipelines.find((x) => x.name === name);
    if (!p)
      throw new InvalidRequestError(
        `unknown pipeline '${name}' (available: ${this.manifest.pipelines.map((x) => x.name).join(', ')})`,
      );
    return p;
  }

  private encoderEntry(p: PipelineEntry, name: string): EncoderEntry {
    const e = p.encoders.find((x) => x.name === name);
    if (!e)
      throw new InvalidRequestError(
        `unknown encoder '${name}' for pipeline '${p.name}' (available: ${p.encoders.map((x) => x.name).join(', ')})`,
      );
    return e;
  }

  resolve(r: PartialRequest): GenerationRequest {
    return resolveRequest(this.info, r);
  }

  pipeline(name: string): Promise<StableDiffusion> {
    let p = this.pipelines.get(name);
    if (!p) {
      const entry = this.entry(name);
      p = StableDiffusion.load(entry.path, this.opts.session, entry.config);
      p.catch(() => this.pipelines.delete(name));
      this.pipelines.set(name, p);
    }
    return p;
  }

  /** The pipeline's safety check, loaded on first use; undefined when its manifest entry names none. */
  private safetyCheck(name: string): Promise<SafetyCheck> | undefined {
    const settings = this.entry(name).safety;
    if (!settings) return undefined;
    let c = this.safetyChecks.get(name);
    if (!c) {
      c = SafetyCheck.load(settings);
      c.catch(() => this.safetyChecks.delete(name));
      this.safetyChecks.set(name, c);
    }
    return c;
  }

  /** The named encoder of a pipeline, from the bounded cache (most recently used last). */
  async encoder(pipeline: string, name: string): Promise<PromptEncoder> {
    const key = `${pipeline}/${name}`;
    let enc = this.encoders.get(key);
    if (enc) {
      this.encoders.delete(key);
    } else {
      const entry = this.encoderEntry(this.entry(pipeline), name);
      enc = PromptEncoder.load(entry.path, this.opts.session, entry.config);
      enc.catch(() => this.encoders.delete(key));
    }
    this.encoders.set(key, enc);
    const max = this.opts.maxEncoders ?? 4;
    while (this.encoders.size > max) {
      const [oldest, victim] = this.encoders.entries().next().value!;
      this.encoders.delete(oldest);
      victim.then((v) => v.close()).catch(() => {});
    }
    return enc;
  }

  async runBatch(jobs: BatchJob[], hooks: EngineHooks): Promise<Map<string, JobOutcome>> {
    const outcomes = new Map<string, JobOutcome>();
    if (jobs.length === 0) return outcomes;
    const key = batchKey(jobs[0].request);
    const mismatch = jobs.find((j) => batchKey(j.request) !== key);
    if (mismatch) throw new Error(`job ${mismatch.id} cannot share a batch with ${jobs[0].id}`);
    const { pipeline: pname, width, height, steps, scheduler } = jobs[0].request;
    const sd = await this.pipeline(pname);
    const prepared: DenoiseJob[] = [];
    for (const { id, request: r } of jobs) {
      try {
        prepared.push(await this.prepare(sd, id, r));
      } catch (e) {
        outcomes.set(id, { ok: false, failure: 'error', message: (e as Error).message });
      }
    }
    // Calls of at most two images at the pipeline's largest size (one with its guidance twin): bounded time per call,
    // so a cancelled batch leaves the worker within one call.
    const maxCallPixels = 2 * this.info.pipelines.find((p) => p.name === pname)!.limits.maxPixels;
    const imagesPerCall = Math.max(1, Math.floor(maxCallPixels / (width * height)));
    const latents = await sd.denoise(prepared, height, width, {
      onStep: hooks.onProgress,
      isCancelled: hooks.isCancelled,
      yieldBetweenSteps: hooks.yieldBetweenSteps ?? (() => new Promise((res) => setImmediate(res))),
      onModelOutput: this.previewHook(sd, pname, height, width, jobs, hooks),
      maxRowsPerCall: imagesPerCall,
    });
    const safety = await this.safetyCheck(pname);
    for (const { id, request: r } of jobs) {
      if (outcomes.has(id)) continue;
      const lat = latents.get(id);
      const images = lat && (await this.decodeInCalls(sd, lat, r, imagesPerCall, () => hooks.isCancelled(id)));
      if (!images) {
        outcomes.set(id, { ok: false, failure: 'cancelled', message: 'cancelled' });
        continue;
      }
      try {
        requireFiniteImages(images, r);
      } catch (e) {
        outcomes.set(id, { ok: false, failure: 'error', message: (e as Error).message });
        continue;
      }
      const delivered = await deliver(images, r, safety);
      const out: GeneratedImage[] = delivered.map(({ png, verdict }) => ({
        png,
        seed: r.seed,
        width,
        height,
        encoder: r.encoder,
        scheduler,
        steps,
        guidanceScale: r.guidanceScale,
        pipeline: pname,
        safety: verdict,
      }));
      outcomes.set(id, { ok: true, images: out });
    }
    return outcomes;
  }

  /** Turns each step's UNet output into a preview PNG per watched job, where the pipeline allows previews. */
  private previewHook(
    sd: StableDiffusion,
    pipeline: string,
    height: number,
    width: number,
    jobs: BatchJob[],
    hooks: EngineHooks,
  ) {
    const map = this.latentRgb.get(pipeline);
    const allowed = this.info.pipelines.find((p) => p.name === pipeline)?.previews;
    const watched = new Set(jobs.filter((j) => j.previews).map((j) => j.id));
    if (!hooks.onPreview || !map || !allowed || watched.size === 0) return undefined;
    const estimate = new CleanEstimate(sd.schedulerConfig);
    const h = height / sd.vaeScale;
    const w = width / sd.vaeScale;
    return (jobId: string, step: number, input: Float32Array, output: Float32Array, t: number) => {
      if (!watched.has(jobId)) return;
      const n = input.length / (map.factors.length * h * w);
      // The first image of the job stands for it: a preview is a progress cue, not a result.
      const first = estimate.estimate(input, output, t).subarray(0, input.length / n);
      const [rgb] = latentsToRgb(first, 1, h, w, map);
      hooks.onPreview!(jobId, step, { png: encodePng(rgb!, w, h), width: w, height: h });
    };
  }

  /** Decode `r.numImages` latents a few images per VAE call; undefined once the job is cancelled between calls. */
  private async decodeInCalls(
    sd: StableDiffusion,
    latents: Float32Array,
    r: GenerationRequest,
    perCall: number,
    isCancelled: () => boolean,
  ): Promise<F32Tensor | undefined> {
    if (r.numImages <= perCall) return sd.decode(latents, r.numImages, r.height, r.width);
    const latentSize = latents.length / r.numImages;
    const parts: Float32Array[] = [];
    for (let i = 0; i < r.numImages; i += perCall) {
      if (isCancelled()) return undefined;
      const n = Math.min(perCall, r.numImages - i);
      parts.push((await sd.decode(latents.slice(i * latentSize, (i + n) * latentSize), n, r.height, r.width)).data);
    }
    return { dtype: 'F32', shape: [r.numImages, r.height, r.width, 3], data: concat(parts) };
  }

  /**
   * One request outside the batching machinery, for the CLI and the evaluation harness: the float images as well
   * as the PNGs. `noise` replaces the seeded initial latents (diffusers' `latents=` argument).
   */
  async generate(
    r: GenerationRequest,
    opts: {
      noise?: Float32Array;
      onStep?: (step: number, total: number) => void;
      onWarning?: (w: string) => void;
    } = {},
  ): Promise<{ images: F32Tensor; delivered: DeliveredImage[] }> {
    const sd = await this.pipeline(r.pipeline);
    const job = await this.prepare(sd, 'cli', r, opts.noise, opts.onWarning);
    const latents = await sd.denoise([job], r.height, r.width, { onStep: (_id, s, t) => opts.onStep?.(s, t) });
    const images = await sd.decode(latents.get('cli')!, r.numImages, r.height, r.width);
    requireFiniteImages(images, r);
    return { images, delivered: await deliver(images, r, await this.safetyCheck(r.pipeline)) };
  }

  /** Conditioning, initial noise and a fresh scheduler for one request. */
  private async prepare(
    sd: StableDiffusion,
    id: string,
    r: GenerationRequest,
    givenNoise?: Float32Array,
    onWarning?: (w: string) => void,
  ): Promise<DenoiseJob> {
    const enc = await this.encoder(r.pipeline, r.encoder);
    sd.checkEncoder(enc, r.encoder);
    const n = r.numImages;
    const guided = r.guidanceScale > 1;
    const { embeds, warnings } = await enc.encode(
      sd.tokenizer,
      guided ? [r.prompt, r.negativePrompt] : [r.prompt],
      r.clipSkip,
    );
    for (const w of warnings) onWarning?.(w);
    const [, S, D] = embeds.shape;
    // Encode each prompt once and repeat it for every image, as diffusers' num_images_per_prompt does.
    const rows = (k: number): F32Tensor => {
      const one = embeds.data.subarray(k * S * D, (k + 1) * S * D);
      const data = new Float32Array(n * S * D);
      for (let i = 0; i < n; i++) data.set(one, i * S * D);
      return { dtype: 'F32', shape: [n, S, D], data };
    };
    const cond = rows(0);
    const uncond = guided ? rows(1) : undefined;
    // One torch-compatible generator per request, drawn from as diffusers draws: the initial latents first, then
    // any noise a stochastic scheduler asks for. So a seed gives the same pictures alone or in a batch.
    const gen = new TorchGenerator(r.seed);
    const shape = [n, sd.latentChannels, r.height / sd.vaeScale, r.width / sd.vaeScale];
    const noise = givenNoise ?? gen.randn(shape);
    if (noise.length !== shape.reduce((a, b) => a * b))
      throw new InvalidRequestError(`initial latents hold ${noise.length} values, expected [${shape}]`);
    const scheduler = createScheduler(r.scheduler, sd.schedulerConfig, {}, { noise: (count) => gen.randn([count]) });
    scheduler.setTimesteps(r.steps);
    return { id, noise, n, cond, uncond, guidanceScale: r.guidanceScale, scheduler };
  }

  async close(): Promise<void> {
    for (const p of this.pipelines.values()) await (await p).close();
    for (const e of this.encoders.values()) await (await e).close();
    for (const c of this.safetyChecks.values()) await (await c).close();
  }
}

/** PNGs whose `parameters` text chunk records, as JSON, how each was made. */
/** An image as the client gets it: the PNG (empty when the safety action refuses it) and the pipeline's verdict. */
export interface DeliveredImage {
  png: Uint8Array;
  verdict?: SafetyVerdict;
}

/** PNGs of a request's images, each judged by the pipeline's safety check where it has one and its action applied. */
async function deliver(images: F32Tensor, r: GenerationRequest, safety?: SafetyCheck): Promise<DeliveredImage[]> {
  const [, h, w] = images.shape;
  const rgbs = imagesToBytes(images);
  const checked = await safety?.check(rgbs.map((rgb) => ({ rgb, width: w, height: h })));
  return rgbs.map((made, i) => {
    const rgb = checked ? checked[i]!.rgb : made;
    const png = rgb ? encodePng(rgb, w, h, { parameters: JSON.stringify(pngParameters(r, i)) }) : new Uint8Array(0);
    return { png, verdict: checked?.[i]?.verdict };
  });
}

function pngParameters(r: GenerationRequest, index: number): Record<string, string | number> {
  return {
    prompt: r.prompt,
    negative_prompt: r.negativePrompt,
    seed: String(r.seed),
    steps: r.steps,
    guidance_scale: r.guidanceScale,
    scheduler: r.scheduler,
    width: r.width,
    height: r.height,
    pipeline: r.pipeline,
    encoder: r.encoder,
    clip_skip: r.clipSkip,
    image_index: index,
  };
}

/** What clients see of a safety classifier: `nsfwjs…` as written, a descriptor by its file name (no paths). */
function classifierName(spec: string): string {
  return spec.startsWith('nsfwjs') ? spec : basename(spec, '.json');
}

export async function createEngine(opts: EngineOptions = {}): Promise<Engine> {
  const manifest = typeof opts.manifest === 'object' ? opts.manifest : readManifest(opts.manifest ?? DEFAULT_MANIFEST);
  return new LocalEngine(manifest, opts);
}
