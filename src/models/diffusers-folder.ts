import { createHash, type Hash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { Config } from '../core/config.js';
import { weightFiles } from '../core/weights.js';
import { InputError } from '../core/errors.js';

/**
 * A Stable Diffusion pipeline folder as diffusers saves it: `model_index.json` naming the components, one folder
 * per component. Reading it checks the layout and picks the weight files; it loads no weights.
 */

/** A component with weights: unet, vae, text_encoder. */
export interface ModelComponent {
  dir: string;
  /** The class model_index.json names, e.g. `UNet2DConditionModel`. */
  className: string;
  config: Config;
  /** The safetensors file(s) to load: fp32 when present, else the `.fp16` variant; several for sharded checkpoints. */
  weightFiles: string[];
}

export interface TokenizerComponent {
  dir: string;
  className: string;
  /** `tokenizer.json`, or `vocab.json` + `merges.txt` (SD 1.x checkpoints), plus the configs beside them. */
  files: string[];
}

export interface SchedulerComponent {
  dir: string;
  className: string;
  config: Config;
}

export interface DiffusersFolder {
  root: string;
  components: {
    unet: ModelComponent;
    vae: ModelComponent;
    text_encoder: ModelComponent;
    tokenizer: TokenizerComponent;
    scheduler: SchedulerComponent;
  };
}

const REQUIRED = ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'] as const;
type ComponentName = (typeof REQUIRED)[number];

/** model_index.json maps each component to [library, class]; [null, null] marks an absent optional one. */
function readModelIndex(root: string): Record<ComponentName, string> {
  const file = join(root, 'model_index.json');
  if (!existsSync(file)) throw new InputError(`${root}: not a diffusers pipeline folder (no model_index.json)`);
  const index = Config.read(file).raw;
  const classes = {} as Record<ComponentName, string>;
  const unlisted: string[] = [];
  for (const name of REQUIRED) {
    const entry = index[name];
    if (Array.isArray(entry) && entry.length === 2 && typeof entry[1] === 'string') classes[name] = entry[1];
    else unlisted.push(name);
  }
  if (unlisted.length)
    throw new InputError(
      `${file}: the pipeline needs component(s) ${unlisted.join(', ')}, which are not listed as [library, class]`,
    );
  return classes;
}

function tokenizerFiles(dir: string): string[] {
  const present = (f: string) => existsSync(join(dir, f));
  let core: string[];
  if (present('tokenizer.json')) core = ['tokenizer.json'];
  else if (present('vocab.json') && present('merges.txt')) core = ['vocab.json', 'merges.txt'];
  else throw new InputError(`${dir}: no tokenizer.json, nor vocab.json with merges.txt`);
  const extras = ['tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json'].filter(
    (f) => !core.includes(f) && present(f),
  );
  return [...core, ...extras].map((f) => join(dir, f));
}

export function readDiffusersFolder(path: string): DiffusersFolder {
  const root = resolve(path);
  const classes = readModelIndex(root);
  const missing = REQUIRED.filter((name) => !existsSync(join(root, name)) || !statSync(join(root, name)).isDirectory());
  if (missing.length) {
    const what = missing.map((name) => `${name}/ (${classes[name]})`).join(', ');
    throw new InputError(
      `${root}: missing component folder${missing.length > 1 ? 's' : ''} ${what}, listed in model_index.json`,
    );
  }
  const model = (name: 'unet' | 'vae' | 'text_encoder', stem: 'model' | 'diffusion_pytorch_model'): ModelComponent => {
    const dir = join(root, name);
    return {
      dir,
      className: classes[name],
      config: Config.read(join(dir, 'config.json')),
      weightFiles: weightFiles(dir, stem),
    };
  };
  const tokenizerDir = join(root, 'tokenizer');
  const schedulerDir = join(root, 'scheduler');
  return {
    root,
    components: {
      unet: model('unet', 'diffusion_pytorch_model'),
      vae: model('vae', 'diffusion_pytorch_model'),
      text_encoder: model('text_encoder', 'model'),
      tokenizer: { dir: tokenizerDir, className: classes.tokenizer, files: tokenizerFiles(tokenizerDir) },
      scheduler: {
        dir: schedulerDir,
        className: classes.scheduler,
        config: Config.read(join(schedulerDir, 'scheduler_config.json')),
      },
    },
  };
}

/** Bytes sampled from each end of a weight file's data: enough to tell fine-tunes apart without reading gigabytes. */
const SAMPLE_BYTES = 1 << 20;

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done);
}

/** Size, safetensors header, and the first and last MiB of the tensor data. */
function hashWeightFile(h: Hash, path: string): void {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const headerLen = size >= 8 ? Number(readAt(fd, 0, 8).readBigUInt64LE(0)) : 0;
    const dataStart = Math.min(size, 8 + headerLen);
    const dataLen = size - dataStart;
    h.update(`weights ${basename(path)} ${size}\n`);
    h.update(readAt(fd, 0, dataStart));
    const head = Math.min(SAMPLE_BYTES, dataLen);
    const tail = Math.min(SAMPLE_BYTES, dataLen - head);
    h.update(readAt(fd, dataStart, head));
    h.update(readAt(fd, size - tail, tail));
  } finally {
    closeSync(fd);
  }
}

/**
 * A key for caching what is built from a component (e.g. converted ONNX graphs) by content, not by path: sha256
 * over the class name, the config / tokenizer files in full, and each weight file's name, size, header and first
 * and last MiB of data. A change confined to the middle of a large weight file with the same header is not seen.
 */
export function contentKey(c: ModelComponent | TokenizerComponent | SchedulerComponent): string {
  const h = createHash('sha256');
  h.update(`class ${c.className}\n`);
  const whole = 'files' in c ? c.files : [c.config.file].filter((f) => existsSync(f));
  for (const f of whole) {
    const bytes = readFileSync(f);
    h.update(`file ${basename(f)} ${bytes.length}\n`);
    h.update(bytes);
  }
  // Its values too: a single-file checkpoint's config is a default file with sizes read from the tensors.
  if (!('files' in c)) h.update(`config ${JSON.stringify(c.config.raw)}\n`);
  if ('weightFiles' in c) for (const f of [...c.weightFiles].sort()) hashWeightFile(h, f);
  return h.digest('hex');
}
