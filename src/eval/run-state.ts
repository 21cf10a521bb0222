/**
 * `<out>/run.json`: what an evaluation run has generated so far, rewritten atomically after every finished job, so a
 * crashed or interrupted run loses nothing it finished and a rerun generates only what is missing.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Settings that decide the pictures: a rerun with other values would mix runs, so it is refused. */
export interface GenerationSettings {
  pipeline: string;
  width: number;
  height: number;
  steps: number;
  guidanceScale: number;
  scheduler: string;
  baseSeed: string;
  imagesPerPrompt: number;
  negativePrompt: string;
}

export interface ImageRecord {
  encoder: string;
  promptId: string;
  index: number;
  seed: string;
  /** Relative to the run folder. */
  file: string;
  /** This image's share of its job's generation time. */
  seconds: number;
}

export interface RunFile {
  version: 1;
  settings: GenerationSettings;
  /** Keyed by `file`. */
  images: Record<string, ImageRecord>;
  /** `<encoder>/<promptId>` → why generation failed (retried on the next run). */
  failed: Record<string, string>;
}

/** A run folder that cannot take this run, or bad slice input: the CLI reports it as a usage error (exit 2). */
export class RunFolderError extends Error {
  override name = 'RunFolderError';
}

export function imageFile(encoder: string, promptId: string, index: number): string {
  return `images/${encoder}/${promptId}-${index}.png`;
}

export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

export class RunState {
  private constructor(
    readonly dir: string,
    readonly data: RunFile,
    private readonly name: string,
  ) {}

  get file(): string {
    return join(this.dir, this.name);
  }

  /**
   * The run in `dir`, or a new one; refuses a folder whose run used other generation settings. `name` is the state
   * file: a slice of a sharded run keeps its own (shards.ts).
   */
  static open(dir: string, settings: GenerationSettings, name = 'run.json'): RunState {
    const file = join(dir, name);
    if (!existsSync(file)) return new RunState(dir, { version: 1, settings, images: {}, failed: {} }, name);
    let data: RunFile;
    try {
      data = JSON.parse(readFileSync(file, 'utf8')) as RunFile;
    } catch (e) {
      throw new RunFolderError(`${file}: not valid JSON (${(e as Error).message}); move it away to start afresh`);
    }
    if (data.version !== 1 || typeof data.images !== 'object' || typeof data.settings !== 'object')
      throw new RunFolderError(`${file}: not a safe-sd eval run file`);
    const diffs = (Object.keys(settings) as Array<keyof GenerationSettings>)
      .filter((k) => String(data.settings[k]) !== String(settings[k]))
      .map((k) => `${k} was ${JSON.stringify(data.settings[k])}, now ${JSON.stringify(settings[k])}`);
    if (diffs.length > 0)
      throw new RunFolderError(
        `${file}: this folder holds a run with other settings (${diffs.join('; ')}); use another --out`,
      );
    data.failed ??= {};
    return new RunState(dir, data, name);
  }

  /** Recorded and still on disk. */
  has(file: string): boolean {
    return file in this.data.images && existsSync(join(this.dir, file));
  }

  record(images: ImageRecord[]): void {
    for (const r of images) {
      this.data.images[r.file] = r;
      delete this.data.failed[`${r.encoder}/${r.promptId}`];
    }
  }

  fail(encoder: string, promptId: string, message: string): void {
    this.data.failed[`${encoder}/${promptId}`] = message;
  }

  save(): void {
    writeFileAtomic(this.file, `${JSON.stringify(this.data, null, 1)}\n`);
  }
}
