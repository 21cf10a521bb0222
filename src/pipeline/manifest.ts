import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';

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
  /** Absolute folder: a CLIPTextModel, CLIPTextModelWithProjection or CLIPModel checkpoint. */
  path: string;
  /** As written in the manifest, for display (clients never see absolute paths). */
  source: string;
  safeClip: boolean;
}

export interface PipelineEntry {
  name: string;
  description: string;
  /** Absolute diffusers pipeline folder. */
  path: string;
  defaultEncoder: string;
  defaults: PipelineDefaults;
  encoders: EncoderEntry[];
}

export interface Manifest {
  file: string;
  defaultPipeline: string;
  pipelines: PipelineEntry[];
}

/** The manifest the server and CLI use when none is named. */
export const DEFAULT_MANIFEST = resolve(dirname(new URL(import.meta.url).pathname), '../../pipelines/default.json');

export const FALLBACK_DEFAULTS: PipelineDefaults = { width: 512, height: 512, steps: 25, guidanceScale: 7.5, scheduler: 'pndm' };

function fail(file: string, msg: string): never {
  throw new Error(`${file}: ${msg}`);
}

function obj(file: string, where: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(file, `${where} must be an object`);
  return v as Record<string, unknown>;
}

function folder(file: string, where: string, p: unknown): { abs: string; source: string } {
  if (typeof p !== 'string' || !p) fail(file, `${where}.path must be a non-empty string`);
  const abs = isAbsolute(p) ? p : resolve(dirname(file), p);
  if (!existsSync(abs) || !statSync(abs).isDirectory()) fail(file, `${where}.path: folder ${abs} does not exist`);
  return { abs, source: p };
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
    raw = JSON.parse(readFileSync(abs, 'utf8'));
  } catch (e) {
    fail(abs, `not valid JSON: ${(e as Error).message}`);
  }
  const top = obj(abs, 'the manifest', raw);
  const pipes = obj(abs, 'pipelines', top.pipelines);
  const pipelines: PipelineEntry[] = [];
  for (const [name, v] of Object.entries(pipes)) {
    if (!NAME.test(name)) fail(abs, `pipeline name '${name}' must be letters, digits, '.', '_' or '-'`);
    const p = obj(abs, `pipelines.${name}`, v);
    const { abs: path } = folder(abs, `pipelines.${name}`, p.path);
    const d = p.defaults === undefined ? {} : obj(abs, `pipelines.${name}.defaults`, p.defaults);
    const defaults: PipelineDefaults = {
      width: (d.width as number) ?? FALLBACK_DEFAULTS.width,
      height: (d.height as number) ?? FALLBACK_DEFAULTS.height,
      steps: (d.steps as number) ?? FALLBACK_DEFAULTS.steps,
      guidanceScale: (d.guidance_scale as number) ?? FALLBACK_DEFAULTS.guidanceScale,
      scheduler: (d.scheduler as string) ?? FALLBACK_DEFAULTS.scheduler,
    };
    const encs = obj(abs, `pipelines.${name}.encoders`, p.encoders ?? { original: { path: join(path, 'text_encoder') } });
    const encoders: EncoderEntry[] = [];
    for (const [ename, ev] of Object.entries(encs)) {
      if (!NAME.test(ename)) fail(abs, `encoder name '${ename}' must be letters, digits, '.', '_' or '-'`);
      const e = obj(abs, `pipelines.${name}.encoders.${ename}`, ev);
      const f = folder(abs, `pipelines.${name}.encoders.${ename}`, e.path);
      encoders.push({ name: ename, path: f.abs, source: f.source, safeClip: e.safe_clip === true });
    }
    if (encoders.length === 0) fail(abs, `pipelines.${name} names no encoder`);
    const defaultEncoder = (p.default_encoder as string) ?? encoders[0].name;
    if (!encoders.some((e) => e.name === defaultEncoder)) fail(abs, `pipelines.${name}.default_encoder '${defaultEncoder}' is not one of its encoders`);
    pipelines.push({ name, description: (p.description as string) ?? '', path, defaultEncoder, defaults, encoders });
  }
  if (pipelines.length === 0) fail(abs, 'names no pipeline');
  const defaultPipeline = (top.default_pipeline as string) ?? pipelines[0].name;
  if (!pipelines.some((p) => p.name === defaultPipeline)) fail(abs, `default_pipeline '${defaultPipeline}' is not one of its pipelines`);
  return { file: abs, defaultPipeline, pipelines };
}

/** A one-pipeline manifest for a bare diffusers folder named on the command line. */
export function manifestForFolder(dir: string, encoderDir?: string): Manifest {
  const path = resolve(dir);
  if (!existsSync(join(path, 'model_index.json'))) fail(path, 'not a diffusers pipeline folder (no model_index.json)');
  const encoders: EncoderEntry[] = [{ name: 'original', path: join(path, 'text_encoder'), source: 'text_encoder', safeClip: false }];
  if (encoderDir) encoders.unshift({ name: 'custom', path: resolve(encoderDir), source: encoderDir, safeClip: false });
  return {
    file: join(path, 'model_index.json'),
    defaultPipeline: 'default',
    pipelines: [{ name: 'default', description: path, path, defaultEncoder: encoders[0].name, defaults: { ...FALLBACK_DEFAULTS }, encoders }],
  };
}
