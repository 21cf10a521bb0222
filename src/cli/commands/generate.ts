import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { SafetensorsFile, writeSafetensors } from '../../core/safetensors.js';
import { LocalEngine } from '../../pipeline/engine.js';
import { InvalidRequestError, type GenerationRequest } from '../../pipeline/engine-api.js';
import { DEFAULT_MANIFEST, manifestForModel, readManifest, type Manifest } from '../../pipeline/manifest.js';
import { UsageError } from '../errors.js';
import { providerSettings, type Provider } from '../../onnx/session.js';
import { intOption, numberOption, providerOption, seedOption } from '../options.js';

interface GenerateOptions {
  provider: Provider;
  model?: string;
  encoder?: string;
  config?: string;
  prompt: string;
  negative?: string;
  scheduler?: string;
  steps?: number;
  guidance?: number;
  width?: number;
  height?: number;
  seed?: bigint;
  numImages?: number;
  clipSkip?: number;
  latents?: string;
  out?: string;
  rawOut?: string;
  json?: boolean;
}

/**
 * The manifest `--model` names: a manifest file (.json), a diffusers or ONNX export folder, or a single-file
 * checkpoint (`--config`: its config folder); `--encoder` adds a text encoder.
 */
function manifestFor(model: string | undefined, encoder: string | undefined, config: string | undefined): Manifest {
  const path = model ?? DEFAULT_MANIFEST;
  if (!existsSync(path)) throw new UsageError(`--model ${path}: no such file or folder`);
  if (encoder && !existsSync(encoder)) throw new UsageError(`--encoder ${encoder}: no such file or folder`);
  if (config && !existsSync(config)) throw new UsageError(`--config ${config}: no such folder`);
  if (!path.toLowerCase().endsWith('.json')) return manifestForModel(path, { encoder, config });
  if (config)
    throw new UsageError(
      '--config goes with a single-file --model, not with a manifest (which names its config folders)',
    );
  const m = readManifest(path);
  if (encoder) {
    const p = m.pipelines.find((x) => x.name === m.defaultPipeline)!;
    p.encoders.unshift({ name: 'custom', path: resolve(encoder), source: encoder, safeClip: false });
    p.defaultEncoder = 'custom';
  }
  return m;
}

/** `--latents file.safetensors:tensor`: the initial noise, as diffusers' `latents=`. */
function readLatents(spec: string): Float32Array {
  const at = spec.lastIndexOf(':');
  if (at <= 0) throw new UsageError(`--latents ${spec}: expected <file.safetensors>:<tensor>`);
  const [file, name] = [spec.slice(0, at), spec.slice(at + 1)];
  if (!existsSync(file)) throw new UsageError(`--latents: ${file}: no such file`);
  const f = SafetensorsFile.open(file);
  try {
    if (!f.has(name))
      throw new UsageError(`--latents: ${file} has no tensor '${name}' (it has ${f.names.slice(0, 8).join(', ')})`);
    return f.readF32(name).data;
  } finally {
    f.close();
  }
}

/** Where image i goes: `--out x.png` for one image (x-1.png... for more), `--out dir/` or a folder for several. */
function outputPaths(out: string | undefined, n: number, seed: bigint): string[] {
  const target = out ?? 'out';
  const isFile = target.toLowerCase().endsWith('.png');
  if (isFile) {
    mkdirSync(dirname(resolve(target)), { recursive: true });
    return Array.from({ length: n }, (_, i) => (n === 1 ? target : target.replace(/\.png$/i, `-${i}.png`)));
  }
  mkdirSync(target, { recursive: true });
  return Array.from({ length: n }, (_, i) => join(target, `${seed}-${i}.png`));
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('generate images from a prompt with the default model or a given pipeline and text encoder')
    .option(
      '--model <path>',
      'pipeline manifest (.json), diffusers or ONNX export folder, or single-file SD 1.x/2.x .safetensors',
      undefined,
    )
    .option(
      '--config <dir>',
      'config folder (diffusers layout: unet/, vae/, text_encoder/) of a single-file checkpoint not sized like ' +
        'SD 1.x/2.x',
    )
    .option(
      '--encoder <path>',
      "text encoder (CLIPTextModel or CLIPModel folder, ONNX text_encoder folder) to use instead of the pipeline's",
    )
    .requiredOption('--prompt <text>', 'the prompt')
    .option('--negative <text>', 'negative prompt')
    .option('--scheduler <name>', 'pndm|ddim|euler|euler-a|lms|dpmpp-2m|dpmpp-2m-karras|dpmpp-sde|unipc|heun|ddpm')
    .option('--steps <n>', 'denoising steps (1..1000)', intOption('--steps'))
    .option('--guidance <g>', 'classifier-free guidance scale', numberOption('--guidance'))
    .option('--width <px>', 'multiple of 8', intOption('--width'))
    .option('--height <px>', 'multiple of 8', intOption('--height'))
    .option(
      '--seed <s>',
      'seed of the torch-compatible noise generator (0..2^64-1); random when absent',
      seedOption('--seed'),
    )
    .option('--num-images <n>', 'images for the prompt', intOption('--num-images'))
    .option('--clip-skip <k>', '0 or 1 = last layer, 2 = penultimate, ...', intOption('--clip-skip'))
    .option('--latents <file:tensor>', 'initial noise [N,C,h,w] from a safetensors file (before init_noise_sigma)')
    .option('--out <path>', 'PNG file, or folder for the images', undefined)
    .option('--raw-out <file>', 'also write the float images [N,H,W,3] in [0,1] as safetensors (key "image")')
    .option('--json', 'print a JSON summary on stdout')
    .addOption(providerOption())
    .action(async (o: GenerateOptions) => {
      let engine: LocalEngine;
      try {
        engine = new LocalEngine(manifestFor(o.model, o.encoder, o.config), { session: providerSettings(o.provider) });
      } catch (e) {
        // The user named these folders: what is wrong with them is a usage error.
        throw e instanceof UsageError ? e : new UsageError((e as Error).message);
      }
      let request: GenerationRequest;
      try {
        request = engine.resolve({
          prompt: o.prompt,
          negativePrompt: o.negative,
          scheduler: o.scheduler,
          steps: o.steps,
          guidanceScale: o.guidance,
          width: o.width,
          height: o.height,
          seed: o.seed,
          numImages: o.numImages,
          clipSkip: o.clipSkip,
        });
      } catch (e) {
        if (e instanceof InvalidRequestError) throw new UsageError(e.message);
        throw e;
      }
      const noise = o.latents ? readLatents(o.latents) : undefined;
      const bar =
        process.stderr.isTTY && !o.json
          ? new SingleBar({ format: 'denoising [{bar}] {value}/{total} steps | {duration}s', hideCursor: true })
          : undefined;
      const started = performance.now();
      try {
        const { images, delivered } = await engine.generate(request, {
          noise,
          onWarning: (w) => process.stderr.write(`safe-sd: warning: ${w}\n`),
          onStep: (step, total) => {
            if (!bar) return;
            if (step === 1) bar.start(total, 0);
            bar.update(step);
          },
        });
        bar?.stop();
        const paths = outputPaths(o.out, delivered.length, request.seed);
        // A refused image (the pipeline's safety action) has no PNG: nothing is written for it.
        const files = paths.filter((_, i) => delivered[i]!.png.length > 0);
        delivered.forEach(({ png }, i) => {
          if (png.length > 0) writeFileSync(paths[i]!, png);
        });
        if (o.rawOut) {
          // The float images hold what the safety action withheld or blurred: those are written as zeros.
          const per = images.data.length / delivered.length;
          delivered.forEach(({ verdict }, i) => {
            if (verdict && verdict.delivered !== 'image') images.data.fill(0, i * per, (i + 1) * per);
          });
          writeSafetensors(o.rawOut, { image: images });
        }
        const summary = {
          files,
          seed: String(request.seed),
          pipeline: request.pipeline,
          encoder: request.encoder,
          scheduler: request.scheduler,
          steps: request.steps,
          guidance_scale: request.guidanceScale,
          width: request.width,
          height: request.height,
          seconds: +((performance.now() - started) / 1000).toFixed(3),
          safety: delivered.map(({ verdict }, i) => (verdict ? { file: paths[i], ...verdict } : null)),
        };
        if (o.json) {
          process.stdout.write(`${JSON.stringify(summary)}\n`);
        } else {
          for (const [i, { verdict }] of delivered.entries())
            if (verdict?.flagged) process.stderr.write(`safe-sd: ${paths[i]}: ${verdict.reason}\n`);
          const wrote = files.length ? `wrote ${files.join(', ')}` : 'wrote no image';
          process.stderr.write(`safe-sd: ${wrote} (seed ${request.seed}, ${summary.seconds} s)\n`);
        }
      } catch (e) {
        if (e instanceof InvalidRequestError) throw new UsageError(e.message);
        throw e;
      } finally {
        bar?.stop();
        await engine.close();
      }
    });
}
