import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GraphBuilder } from './graph.js';
import { saveModel } from './serialize.js';

/** Where converted graphs are kept: $SAFE_SD_CACHE, else ~/.cache/safe-sd. */
export function cacheRoot(): string {
  return process.env.SAFE_SD_CACHE || join(homedir(), '.cache', 'safe-sd');
}

let codeKeyMemo: string | undefined;

/**
 * A hash of the code that builds graphs, so that a cached graph written by older code is never reused: cheaper to
 * get right than a version number someone must remember to bump.
 */
export function graphCodeKey(): string {
  if (codeKeyMemo) return codeKeyMemo;
  const src = join(dirname(fileURLToPath(import.meta.url)), '..');
  const h = createHash('sha256');
  for (const dir of ['core', 'onnx', 'models'].map((d) => join(src, d))) {
    for (const f of readdirSync(dir)
      .filter((f) => f.endsWith('.ts'))
      .sort()) {
      h.update(f);
      h.update(readFileSync(join(dir, f)));
    }
  }
  codeKeyMemo = h.digest('hex').slice(0, 16);
  return codeKeyMemo;
}

/**
 * The path of the ONNX graph for `kind` (e.g. 'unet') of the checkpoint with content key `contentKey`, building
 * and saving it on first use. The folder is written under a temporary name and renamed, so a crash never leaves a
 * half-written graph that a later run would trust.
 */
export function cachedGraph(kind: string, contentKey: string, build: () => GraphBuilder, root = cacheRoot()): string {
  const id = createHash('sha256').update(`${kind}\0${contentKey}\0${graphCodeKey()}`).digest('hex').slice(0, 24);
  const dir = join(root, `${kind}-${id}`);
  // Named after its kind, so that external data (`<kind>.onnx.data`) keeps a distinct name when exported.
  const model = join(dir, `${kind}.onnx`);
  if (existsSync(model)) return model;
  mkdirSync(root, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    saveModel(build(), join(tmp, `${kind}.onnx`));
    try {
      renameSync(tmp, dir);
    } catch (e) {
      // Another process finished the same graph first: use theirs.
      if (!existsSync(model)) throw e;
      rmSync(tmp, { recursive: true, force: true });
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return model;
}
