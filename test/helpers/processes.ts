/** The CLI as separate processes on loopback: what the scale-out tests start, kill and compare. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const exec = promisify(execFile);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  try {
    const { stdout, stderr } = await exec(process.execPath, ['bin/safe-sd.js', ...args], {
      cwd: ROOT,
      env,
      maxBuffer: 64 << 20,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

export interface Child {
  process: ChildProcess;
  /** stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>;
}

export function start(args: string[], env: NodeJS.ProcessEnv = process.env): Child {
  const child = spawn(process.execPath, ['bin/safe-sd.js', ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  return { process: child, output: () => out, exited };
}

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port: number, ms = 120_000, host = '127.0.0.1'): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, host, () => {
        c.end();
        resolve(true);
      }).on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function waitFor(what: string, ok: () => boolean, ms = 120_000): Promise<void> {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * How run folder `b` differs from `a` (empty when equal): the same PNG files byte for byte, the same scores.json,
 * and the same report but for where and when the pictures were made.
 */
export function runDifferences(a: string, b: string): string[] {
  const diffs: string[] = [];
  const pngs = (dir: string) =>
    readdirSync(join(dir, 'images'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.png'))
      .sort();
  const [pa, pb] = [pngs(a), pngs(b)];
  if (pa.join() !== pb.join()) diffs.push(`image files: ${pa.length} vs ${pb.length}`);
  for (const f of pa.filter((x) => pb.includes(x))) {
    if (!readFileSync(join(a, 'images', f)).equals(readFileSync(join(b, 'images', f)))) diffs.push(`${f} differs`);
  }
  if (!readFileSync(join(a, 'scores.json')).equals(readFileSync(join(b, 'scores.json'))))
    diffs.push('scores.json differs');
  const report = (dir: string) => {
    const r = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'));
    return JSON.stringify({
      settings: { ...r.settings, generatedBy: null },
      encoders: r.encoders,
      expected: r.counts.expectedImages,
      failed: r.counts.failedJobs,
    });
  };
  if (report(a) !== report(b)) diffs.push(`report.json differs:\n${report(a)}\n${report(b)}`);
  return diffs;
}
