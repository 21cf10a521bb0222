/**
 * `npm run bench:replicas`: toy images per second through 1 replica and through 3 (grpc-js round robin over
 * 127.0.0.1 ports), printed beside this machine's core count. Every replica shares the same cores, so the ratio says
 * what the balancing costs or gains here, not how a GPU cluster scales (docs/deploy.md reasons that).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { RemoteGenerator } from '../eval/generate-remote.js';
import type { GenJob, JobSettings } from '../eval/generation.js';

const CLI = fileURLToPath(new URL('../../bin/safe-sd.js', import.meta.url));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function listening(port: number, child: ChildProcess): Promise<void> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`replica on port ${port} exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1', () => {
        c.end();
        resolve(true);
      }).on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function imagesPerSecond(
  target: string,
  addresses: number,
  jobs: GenJob[],
  s: JobSettings,
  concurrency: number,
): Promise<number> {
  const generator = new RemoteGenerator([target], { concurrency });
  // One call per address first: model loading and graph building are not throughput.
  await generator.run(jobs.slice(0, addresses), s, async () => {});
  let failed = 0;
  const started = performance.now();
  await generator.run(jobs, s, async (_, o) => {
    if (!o.ok) failed++;
  });
  const seconds = (performance.now() - started) / 1000;
  await generator.close();
  if (failed > 0) throw new Error(`${failed} of ${jobs.length} jobs failed through ${target}`);
  return jobs.length / seconds;
}

const o = new Command('bench:replicas')
  .option(
    '--jobs <n>',
    'timed toy images per configuration',
    (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 3) throw new InvalidArgumentError('--jobs expects an integer >= 3');
      return n;
    },
    24,
  )
  .option('--steps <n>', 'denoising steps per image', (v) => Number(v), 25)
  .option('--concurrency <n>', 'calls in flight per replica', (v) => Number(v), 4)
  .parse()
  .opts<{ jobs: number; steps: number; concurrency: number }>();

const replicas: ChildProcess[] = [];
try {
  const ports = [await freePort(), await freePort(), await freePort()];
  for (const port of ports) {
    replicas.push(
      spawn(process.execPath, [CLI, 'serve', '--port', String(port), '--metrics-port', '0', '--log-level', 'warn'], {
        stdio: ['ignore', 'ignore', 'inherit'],
      }),
    );
  }
  await Promise.all(ports.map((p, i) => listening(p, replicas[i]!)));
  const settings: JobSettings = {
    pipeline: 'toy',
    steps: o.steps,
    guidanceScale: 5,
    scheduler: 'pndm',
    width: 64,
    height: 64,
    numImages: 1,
    negativePrompt: '',
  };
  const jobs: GenJob[] = Array.from({ length: o.jobs }, (_, i) => ({
    encoder: 'original',
    promptId: `${i}`,
    prompt: `a red star on a white background`,
    seed: BigInt(i),
  }));
  const one = await imagesPerSecond(`127.0.0.1:${ports[0]}`, 1, jobs, settings, o.concurrency);
  const three = await imagesPerSecond(
    `ipv4:${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    3,
    jobs,
    settings,
    o.concurrency,
  );
  console.log(
    `toy 64x64, ${o.steps} steps, ${o.jobs} images, ${o.concurrency} calls in flight per replica, one worker ` +
      `per replica, on ${cpus().length} cores ` +
      `(${cpus()[0]?.model ?? 'unknown CPU'}):\n` +
      `  1 replica:  ${one.toFixed(2)} images/s\n` +
      `  3 replicas: ${three.toFixed(2)} images/s (x${(three / one).toFixed(2)})\n` +
      `Load average ${loadavg()[0]!.toFixed(1)} at the end. All replicas share these ${cpus().length} cores: ` +
      'this is not a scaling figure (see docs/deploy.md).',
  );
} finally {
  for (const r of replicas) r.kill('SIGTERM');
}
