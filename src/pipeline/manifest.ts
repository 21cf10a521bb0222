import { existsSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { SAFETY_ACTIONS, type SafetyAction, type SafetySettings } from './safety.js';
import type { PipelineLimits } from './engine-api.js';
import { openPipelineSource } from './source.js';
import { InputError } from '../core/errors.js';
import { readUtf8 } from '../core/text-file.js';

/** Generation settings a pipeline uses when a request leaves them out. */
export interface PipelineDefaults {
  width: number;
  height: number;
  steps: number;
  guidanceScale: number;
  scheduler: string;
}

export interface EncoderEntry {
  name: string;
  /**
   * Absolute path: a CLIPTextModel, CLIPTextModelWithProjection or CLIPModel folder, an exported text encoder folder
   * (`model.onnx`), or a single-file SD checkpoint (its text encoder).
   */
  path: string;
  /** Config folder of a single-file checkpoint whose sizes are not SD 1.x / 2.x's. */
  config?: string;
  /** As written in the manifest, for display (clients never see absolute paths). */
  source: string;
  safeClip: boolean;
}

export interface PipelineEntry {
  name: string;
  description: string;
  /** Absolute path: a diffusers pipeline folder, an ONNX export folder, or a single-file `.safetensors` checkpoint. */
  path: string;
  /** Config folder (diffusers layout) for a single-file checkpoint whose sizes are not SD 1.x / 2.x's. */
  config?: string;
  defaultEncoder: string;
  defaults: PipelineDefaults;
  /** As the manifest's `limits` gives them; pipelineLimits() fills the rest from the model's native size. */
  limits: Partial<PipelineLimits>;
  encoders: EncoderEntry[];
  /** The classifier that judges every image the server makes with this pipeline, and what to do when it flags one. */
  safety?: SafetySettings;
}

export interface Manifest {
  file: string;
  defaultPipeline: string;
  pipelines: PipelineEntry[];
}

/** The manifest the server and CLI use when none is named. */
export const DEFAULT_MANIFEST = resolve(dirname(new URL(import.meta.url).pathname), '../../pipelines/default.json');

export const FALLBACK_DEFAULTS: PipelineDefaults = {
  width: 512,
  height: 512,
  steps: 25,
  guidanceScale: 7.5,
  scheduler: 'pndm',
};

/**
 * Limits of a pipeline whose manifest leaves them out: images up to 4x the native pixel count (2x each side, where
 * SD's composition already falls apart), batches up to 16 native images (the most one request may ask for).
 */
export function pipelineLimits(given: Partial<PipelineLimits>, nativeSize: number): PipelineLimits {
  const native = nativeSize * nativeSize;
  return { maxPixels: given.maxPixels ?? 4 * native, maxBatchPixels: given.maxBatchPixels ?? 16 * native };
}

function positiveInt(file: string, where: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(file, `${where} must be a positive integer`);
  return v;
}

function fail(file: string, msg: string): never {
  throw new InputError(`${file}: ${msg}`);
}

function obj(file: string, where: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(file, `${where} must be an object`);
  return v as Record<string, unknown>;
}

function resolvePath(
  file: string,
  where: string,
  p: unknown,
  what: 'folder' | 'file or folder',
): { abs: string; source: string } {
  if (typeof p !== 'string' || !p) fail(file, `${where} must be a non-empty string`);
  const abs = isAbsolute(p) ? p : resolve(dirname(file), p);
  if (!existsSync(abs) || (what === 'folder' && !statSync(abs).isDirectory()))
    fail(file, `${where}: ${what === 'folder' ? 'folder' : 'path'} ${abs} does not exist`);
  return { abs, source: p };
}

/** The text encoder a pipeline brings: its `text_encoder/` folder, or a single file's own. */
function ownEncoder(path: string, config: string | undefined): { path: string; config?: string } {
  return statSync(path).isFile() ? { path, config } : { path: join(path, 'text_encoder') };
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * Read a pipeline manifest: named pipelines (diffusers folders), each with named text encoders. Paths are relative
 * to the manifest; every folder must exist, so nothing is served that is not there.
 */
export function readManifest(file: string): Manifest {
  const abs = resolve(file);
  if (!existsSync(abs)) fail(abs, 'manifest not found');
  let raw: unknown;
  try {
    raw = JSON.parse(readUtf8(abs));
  } catch (e) {
    fail(abs, `not valid JSON: ${(e as Error).message}`);
  }
  const top = obj(abs, 'the manifest', raw);
  const pipes = obj(abs, 'pipelines', top.pipelines);
  const pipelines: PipelineEntry[] = [];
  for (const [name, v] of Object.entries(pipes)) {
    if (!NAME.test(name)) fail(abs, `pipeline name '${name}' must be letters, digits, '.', '_' or '-'`);
    const p = obj(abs, `pipelines.${name}`, v);
    const { abs: path } = resolvePath(abs, `pipelines.${name}.path`, p.path, 'file or folder');
    const config =
      p.config === undefined ? undefined : resolvePath(abs, `pipelines.${name}.config`, p.config, 'folder').abs;
    const d = p.defaults === undefined ? {} : obj(abs, `pipelines.${name}.defaults`, p.defaults);
    const defaults: PipelineDefaults = {
      width: (d.width as number) ?? FALLBACK_DEFAULTS.width,
      height: (d.height as number) ?? FALLBACK_DEFAULTS.height,
      steps: (d.steps as number) ?? FALLBACK_DEFAULTS.steps,
      guidanceScale: (d.guidance_scale as number) ?? FALLBACK_DEFAULTS.guidanceScale,
      scheduler: (d.scheduler as string) ?? FALLBACK_DEFAULTS.scheduler,
    };
    const l = p.limits === undefined ? {} : obj(abs, `pipelines.${name}.limits`, p.limits);
    const limits: Partial<PipelineLimits> = {
      maxPixels: positiveInt(abs, `pipelines.${name}.limits.max_pixels`, l.max_pixels),
      maxBatchPixels: positiveInt(abs, `pipelines.${name}.limits.max_batch_pixels`, l.max_batch_pixels),
    };
    const own = ownEncoder(path, config);
    const encs = obj(abs, `pipelines.${name}.encoders`, p.encoders ?? { original: own });
    const encoders: EncoderEntry[] = [];
    for (const [ename, ev] of Object.entries(encs)) {
      if (!NAME.test(ename)) fail(abs, `encoder name '${ename}' must be letters, digits, '.', '_' or '-'`);
      const e = obj(abs, `pipelines.${name}.encoders.${ename}`, ev);
      const where = `pipelines.${name}.encoders.${ename}`;
      const f = resolvePath(abs, `${where}.path`, e.path, 'file or folder');
      const econfig =
        e.config === undefined
          ? f.abs === path
            ? config
            : undefined
          : resolvePath(abs, `${where}.config`, e.config, 'folder').abs;
      encoders.push({ name: ename, path: f.abs, source: f.source, safeClip: e.safe_clip === true, config: econfig });
    }
    if (encoders.length === 0) fail(abs, `pipelines.${name} names no encoder`);
    const defaultEncoder = (p.default_encoder as string) ?? encoders[0].name;
    if (!encoders.some((e) => e.name === defaultEncoder))
      fail(abs, `pipelines.${name}.default_encoder '${defaultEncoder}' is not one of its encoders`);
    const safety = p.safety === undefined ? undefined : readSafety(abs, `pipelines.${name}.safety`, p.safety);
    const description = (p.description as string) ?? '';
    pipelines.push({ name, description, path, config, defaultEncoder, defaults, limits, encoders, safety });
  }
  if (pipelines.length === 0) fail(abs, 'names no pipeline');
  const defaultPipeline = (top.default_pipeline as string) ?? pipelines[0].name;
  if (!pipelines.some((p) => p.name === defaultPipeline))
    fail(abs, `default_pipeline '${defaultPipeline}' is not one of its pipelines`);
  return { file: abs, defaultPipeline, pipelines };
}

/** `{ "classifier": "nsfwjs[:threshold]" or a descriptor path, "action": "flag" | "blur" | "refuse" }` */
function readSafety(file: string, where: string, v: unknown): SafetySettings {
  const s = obj(file, where, v);
  const action = (s.action ?? 'flag') as SafetyAction;
  if (!SAFETY_ACTIONS.includes(action)) fail(file, `${where}.action must be one of ${SAFETY_ACTIONS.join(', ')}`);
  if (typeof s.classifier === 'string' && /^nsfwjs(:.*)?$/.test(s.classifier)) {
    return { classifier: s.classifier, action };
  }
  return { classifier: resolvePath(file, `${where}.classifier`, s.classifier, 'file or folder').abs, action };
}

/**
 * A one-pipeline manifest for a checkpoint named on the command line: a diffusers folder, an ONNX export folder or
 * a single-file checkpoint (with its config folder, if any).
 */
export function manifestForModel(model: string, opts: { encoder?: string; config?: string } = {}): Manifest {
  const path = resolve(model);
  if (!existsSync(path)) fail(path, 'no such file or folder');
  const isFile = statSync(path).isFile();
  if (!isFile && !existsSync(join(path, 'model_index.json')) && !existsSync(join(path, 'unet', 'model.onnx'))) {
    fail(path, 'not a diffusers pipeline folder (no model_index.json) nor an ONNX export (no unet/model.onnx)');
  }
  const config = opts.config ? resolve(opts.config) : undefined;
  const own = ownEncoder(path, config);
  // Generate at the size the model was trained at (512 for SD 1.x, 768 for SD 2.x v-models) unless asked otherwise.
  const native = openPipelineSource(path, config).nativeSize;
  const encoders: EncoderEntry[] = [
    {
      name: 'original',
      path: own.path,
      config: own.config,
      source: isFile ? 'single file' : 'text_encoder',
      safeClip: false,
    },
  ];
  if (opts.encoder)
    encoders.unshift({ name: 'custom', path: resolve(opts.encoder), source: opts.encoder, safeClip: false });
  return {
    file: isFile ? path : join(path, 'model_index.json'),
    defaultPipeline: 'default',
    pipelines: [
      {
        name: 'default',
        description: path,
        path,
        config,
        defaultEncoder: encoders[0].name,
        defaults: { ...FALLBACK_DEFAULTS, width: native, height: native },
        limits: {},
        encoders,
      },
    ],
  };
}
