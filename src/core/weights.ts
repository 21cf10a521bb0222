import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile } from './safetensors.js';
import type { F32Tensor } from './tensor.js';
import { InputError } from './errors.js';

/** Where a module tree finds its weights, by checkpoint key. */
export interface WeightStore {
  /** File(s) the weights come from, for error messages. */
  readonly source: string;
  keys(): string[];
  has(key: string): boolean;
  shape(key: string): number[] | undefined;
  /** The weight in float32 (F16/BF16 widened). */
  get(key: string): F32Tensor;
}

/** Weights read lazily from one or more safetensors files (sharded checkpoints have several). */
export class SafetensorsWeights implements WeightStore {
  private readonly byKey = new Map<string, SafetensorsFile>();

  constructor(readonly files: SafetensorsFile[]) {
    for (const f of files) for (const k of f.names) this.byKey.set(k, f);
  }

  static open(paths: string[]): SafetensorsWeights {
    const files: SafetensorsFile[] = [];
    try {
      for (const p of paths) files.push(SafetensorsFile.open(p));
    } catch (e) {
      for (const f of files) f.close();
      throw e;
    }
    return new SafetensorsWeights(files);
  }

  get source(): string {
    return this.files.map((f) => f.path).join(', ');
  }

  keys(): string[] {
    return [...this.byKey.keys()];
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  shape(key: string): number[] | undefined {
    return this.byKey.get(key)?.entry(key).shape;
  }

  get(key: string): F32Tensor {
    const f = this.byKey.get(key);
    if (!f) throw new InputError(`${this.source}: missing weight ${key}`);
    return f.readF32(key);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/** Weights held in memory (random test models, merged LoRA weights, renamed single-file checkpoints). */
export class MemoryWeights implements WeightStore {
  constructor(
    readonly map: Map<string, F32Tensor>,
    readonly source = 'memory',
  ) {}
  keys(): string[] {
    return [...this.map.keys()];
  }
  has(key: string): boolean {
    return this.map.has(key);
  }
  shape(key: string): number[] | undefined {
    return this.map.get(key)?.shape;
  }
  get(key: string): F32Tensor {
    const t = this.map.get(key);
    if (!t) throw new InputError(`${this.source}: missing weight ${key}`);
    return t;
  }
}

/**
 * A view of `inner` under a key prefix: `get('a.b')` reads `prefix + 'a.b'`. Lets one module tree read checkpoints
 * that nest it (e.g. `text_model.` in CLIPModel, `cond_stage_model.transformer.` in single files).
 */
export class PrefixedWeights implements WeightStore {
  constructor(
    readonly inner: WeightStore,
    readonly prefix: string,
  ) {}
  get source(): string {
    return this.inner.source;
  }
  keys(): string[] {
    return this.inner
      .keys()
      .filter((k) => k.startsWith(this.prefix))
      .map((k) => k.slice(this.prefix.length));
  }
  has(key: string): boolean {
    return this.inner.has(this.prefix + key);
  }
  shape(key: string): number[] | undefined {
    return this.inner.shape(this.prefix + key);
  }
  get(key: string): F32Tensor {
    return this.inner.get(this.prefix + key);
  }
}

/**
 * The weight files of a transformers / diffusers model folder, preferring fp32 over the `.fp16` variant when both
 * exist, and following `*.safetensors.index.json` for sharded checkpoints. Pickle-only folders are refused.
 */
export function weightFiles(dir: string, stem: 'model' | 'diffusion_pytorch_model'): string[] {
  for (const variant of ['', '.fp16']) {
    const single = join(dir, `${stem}${variant}.safetensors`);
    if (existsSync(single)) return [single];
    const index = join(dir, `${stem}${variant}.safetensors.index.json`);
    if (existsSync(index)) {
      let map: Record<string, string>;
      try {
        map = JSON.parse(readFileSync(index, 'utf8')).weight_map;
      } catch (e) {
        throw new InputError(`${index}: not a valid shard index: ${(e as Error).message}`);
      }
      return [...new Set(Object.values(map))].map((f) => join(dir, f));
    }
  }
  for (const pickle of [`${stem}.bin`, `${stem}.ckpt`, `${stem}.pt`, 'pytorch_model.bin']) {
    if (existsSync(join(dir, pickle))) {
      throw new InputError(
        `${join(dir, pickle)}: pickle checkpoints are not loaded (unpickling runs arbitrary code); convert it ` +
          `to safetensors first`,
      );
    }
  }
  throw new InputError(`${dir}: no ${stem}.safetensors (or .fp16 variant, or sharded index) found`);
}
