import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { buildClipTextGraph } from './clip.js';
import { loadClip } from './clip-loader.js';
import { contentKey, readDiffusersFolder, type ModelComponent } from './diffusers-folder.js';
import { cachedGraph, graphCodeKey } from '../onnx/graph-cache.js';
import { loadUnetGraph } from './unet.js';
import { buildVaeDecoderGraph, buildVaeEncoderGraph, loadVae } from './vae.js';
import type { GraphBuilder } from '../onnx/graph.js';

export interface ConvertedGraph {
  /** File name inside the output folder. */
  file: string;
  /** Content key of the component it was built from. */
  key: string;
  reused: boolean;
}

export interface ConversionManifest {
  source: string;
  code: string;
  graphs: Record<string, ConvertedGraph>;
}

function vaeGraph(c: ModelComponent, build: typeof buildVaeDecoderGraph): () => GraphBuilder {
  return () => {
    const { config, weights } = loadVae(c.dir);
    try {
      return build(config, weights);
    } finally {
      weights.close();
    }
  };
}

function textGraph(c: ModelComponent): () => GraphBuilder {
  return () => {
    const clip = loadClip(c.dir);
    try {
      return buildClipTextGraph(clip.weights, clip.textConfig!, { projectionDim: clip.projectionDim });
    } finally {
      clip.weights.close();
    }
  };
}

/** Copy a cached graph (`<name>.onnx` and its `<name>.onnx.data`, if any) into `outDir`. */
function exportGraph(cachedModel: string, outDir: string): void {
  const from = dirname(cachedModel);
  for (const f of readdirSync(from)) copyFileSync(join(from, f), join(outDir, f));
}

/**
 * Write ONNX graphs of a diffusers pipeline folder (text encoder, UNet, VAE encoder and decoder) and a manifest of
 * what they were built from. Graphs come from the content-keyed cache, so converting the same weights again (under
 * any path) reuses them; an output folder whose manifest already matches is left as it is.
 */
export function convertPipeline(
  checkpoint: string,
  outDir: string,
  log: (line: string) => void = () => {},
): ConversionManifest {
  const folder = readDiffusersFolder(checkpoint);
  const { unet, vae, text_encoder } = folder.components;
  const plan: Array<[string, ModelComponent, () => GraphBuilder]> = [
    ['text_encoder', text_encoder, textGraph(text_encoder)],
    ['unet', unet, () => loadUnetGraph(unet.dir)],
    ['vae_encoder', vae, vaeGraph(vae, buildVaeEncoderGraph)],
    ['vae_decoder', vae, vaeGraph(vae, buildVaeDecoderGraph)],
  ];
  const out = resolve(outDir);
  const manifestFile = join(out, 'safe-sd-graphs.json');
  const previous: ConversionManifest | undefined = existsSync(manifestFile)
    ? JSON.parse(readFileSync(manifestFile, 'utf8'))
    : undefined;
  mkdirSync(out, { recursive: true });
  const manifest: ConversionManifest = { source: folder.root, code: graphCodeKey(), graphs: {} };
  for (const [name, component, build] of plan) {
    const key = contentKey(component);
    const file = `${name}.onnx`;
    const prev = previous?.graphs[name];
    if (prev && prev.key === key && previous!.code === manifest.code && existsSync(join(out, file))) {
      manifest.graphs[name] = { file, key, reused: true };
      log(`${name}: up to date`);
      continue;
    }
    const started = performance.now();
    const model = cachedGraph(name, key, build);
    const tmp = join(out, `.${name}.tmp-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
    exportGraph(model, tmp);
    for (const f of readdirSync(tmp)) renameSync(join(tmp, f), join(out, f));
    rmSync(tmp, { recursive: true, force: true });
    manifest.graphs[name] = { file, key, reused: false };
    log(`${name}: ${file} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  }
  const tmpManifest = `${manifestFile}.tmp-${process.pid}`;
  writeFileSync(tmpManifest, `${JSON.stringify(manifest, null, 2)}\n`);
  renameSync(tmpManifest, manifestFile);
  return manifest;
}
