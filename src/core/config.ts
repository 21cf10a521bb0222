import { existsSync } from 'node:fs';
import { InputError } from './errors.js';
import { readUtf8 } from './text-file.js';

/** A model's config.json, with typed accessors whose errors name the file and the key. */
export class Config {
  constructor(
    readonly file: string,
    readonly raw: Record<string, unknown>,
  ) {}

  static read(file: string): Config {
    if (!existsSync(file)) throw new InputError(`${file}: missing config file`);
    let raw: unknown;
    try {
      raw = JSON.parse(readUtf8(file));
    } catch (e) {
      throw new InputError(`${file}: not valid JSON: ${(e as Error).message}`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw new InputError(`${file}: not a JSON object`);
    return new Config(file, raw as Record<string, unknown>);
  }

  /** The config of a nested section, e.g. `text_config` of a CLIPModel. */
  section(key: string): Config {
    const v = this.raw[key];
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      throw new InputError(`${this.file}: missing config key '${key}'`);
    return new Config(`${this.file}#${key}`, v as Record<string, unknown>);
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  private fail(key: string, want: string): never {
    const v = this.raw[key];
    throw new InputError(
      v === undefined || v === null
        ? `${this.file}: missing config key '${key}'`
        : `${this.file}: config key '${key}' is ${JSON.stringify(v)}, expected ${want}`,
    );
  }

  int(key: string, fallback?: number): number {
    const v = this.raw[key] ?? fallback;
    if (!Number.isInteger(v)) this.fail(key, 'an integer');
    return v as number;
  }

  num(key: string, fallback?: number): number {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'a number');
    return v;
  }

  str(key: string, fallback?: string): string {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'string') this.fail(key, 'a string');
    return v;
  }

  bool(key: string, fallback?: boolean): boolean {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'boolean') this.fail(key, 'true or false');
    return v;
  }

  ints(key: string, fallback?: number[]): number[] {
    const v = this.raw[key] ?? fallback;
    if (!Array.isArray(v) || !v.every(Number.isInteger)) this.fail(key, 'a list of integers');
    return v as number[];
  }

  strs(key: string, fallback?: string[]): string[] {
    const v = this.raw[key] ?? fallback;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) this.fail(key, 'a list of strings');
    return v as string[];
  }

  /** An int applied to every block, or one value per block (diffusers allows both for several keys). */
  intPerBlock(key: string, blocks: number, fallback?: number | number[]): number[] {
    const v = this.raw[key] ?? fallback;
    if (Number.isInteger(v)) return Array(blocks).fill(v);
    if (Array.isArray(v) && v.length === blocks && v.every(Number.isInteger)) return v as number[];
    this.fail(key, `an integer or a list of ${blocks} integers`);
  }
}
