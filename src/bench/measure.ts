import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** One line of the benchmark table. `value` is absent when the item was not measured (`note` says why). */
export interface BenchRow {
  section: string;
  name: string;
  value?: number;
  unit: string;
  /** The goal, e.g. '>= 0.6'. */
  target?: string;
  note?: string;
}

/** Wall times (ms) of `reps` calls after `warmup` untimed ones. */
export async function times(fn: () => Promise<unknown>, reps: number, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

export async function timeMedian(fn: () => Promise<unknown>, reps: number, warmup = 1): Promise<number> {
  return median(await times(fn, reps, warmup));
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Run a child script of src/bench/children (own process: its memory peak and cold start are its own) and return the
 * JSON of its last stdout line.
 */
export function runChild<T>(script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<T> {
  const path = fileURLToPath(new URL(`./children/${script}`, import.meta.url));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0)
        return reject(new Error(`${script} exited with ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
      try {
        resolve(JSON.parse(last) as T);
      } catch {
        reject(new Error(`${script} printed no JSON result (last line: ${last.slice(0, 200)})`));
      }
    });
  });
}
