import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { basename, join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { cacheRoot } from './graph-cache.js';

/**
 * What an optimised model depends on: ORT's version, the optimisation level and providers, and the CPU (at 'all' ORT
 * re-lays conv weights for the vector width it finds, so the result only runs where it was made).
 */
function optimizedKey(opts: ort.InferenceSession.SessionOptions): string {
  let cpu = cpus()[0]?.model ?? '';
  if (existsSync('/proc/cpuinfo')) cpu += /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  const parts = [ort.env.versions.common, opts.graphOptimizationLevel, JSON.stringify(opts.executionProviders), cpu];
  return createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 16);
}

/** Which model file: its place, size and modification time (a changed file gets a new optimised copy). */
function sourceKey(path: string): string {
  const st = statSync(path);
  return createHash('sha256')
    .update(`${resolve(path)}\0${st.size}\0${st.mtimeMs}`)
    .digest('hex')
    .slice(0, 16);
}

/**
 * Open the model at `path` from its optimised copy, saved in the cache (`<cache>/optimized/`, never beside the user's
 * model, whose folder may be read-only or under version control) the first time: SD 1.5's
 * UNet opens in about a second instead of 40 (docs/benchmarks.md). The copy is written under a temporary name and
 * renamed, so a crash never leaves one that a later open would trust; one that fails to load is deleted and remade;
 * where no copy can be written the model opens as usual.
 */
export async function openOptimized(
  path: string,
  opts: ort.InferenceSession.SessionOptions,
): Promise<ort.InferenceSession> {
  const name = basename(path);
  const dir = join(cacheRoot(), 'optimized', `${sourceKey(path)}-${optimizedKey(opts)}`);
  const cached = join(dir, name);
  if (existsSync(cached)) {
    try {
      return await ort.InferenceSession.create(cached, { ...opts, graphOptimizationLevel: 'disabled' });
    } catch {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const tmp = `${dir}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  let session: ort.InferenceSession;
  try {
    mkdirSync(tmp, { recursive: true });
    session = await ort.InferenceSession.create(path, {
      ...opts,
      optimizedModelFilePath: join(tmp, name),
      // ORT warns that an 'all'-level copy is hardware-specific: the key above already holds the CPU.
      logSeverityLevel: 3,
      // Weights go to a data file beside the optimised model, as the protobuf limit requires for SD-sized UNets.
      extra: {
        ...opts.extra,
        session: {
          ...(opts.extra as { session?: object } | undefined)?.session,
          optimized_model_external_initializers_file_name: `${name}.data`,
          optimized_model_external_initializers_min_size_in_bytes: '1024',
        },
      },
    });
  } catch {
    // A read-only folder or a full disk costs the copy, not the session.
    rmSync(tmp, { recursive: true, force: true });
    return ort.InferenceSession.create(path, opts);
  }
  try {
    renameSync(tmp, dir);
  } catch {
    // Another process or worker saved the same copy first.
    rmSync(tmp, { recursive: true, force: true });
  }
  return session;
}
