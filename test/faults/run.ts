/**
 * `npm run test:faults`: load and faults against the server with the fake engine, on loopback, in bounded counts.
 * Every scenario prints its figures (completed / cancelled / expired / refused / failed, p50/p99 latency of the
 * completed requests, RSS before and after) and asserts that nothing is lost: every call gets exactly one final
 * status, the queue drains to zero, RSS comes back within 10%.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { pino } from 'pino';
import { createDiffusionClient, type DiffusionClient } from '../../src/grpc/proto.js';
import { startServer, type RunningServer, type ServerOptions } from '../../src/server/server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FAKE_ENGINE = fileURLToPath(new URL('../helpers/fake-engine.ts', import.meta.url));
const STEP_MS = 10;

type Kind = 'completed' | 'cancelled' | 'expired' | 'refused' | 'failed';

/** How the suite files each final gRPC status. */
function kindOf(code: grpc.status): Kind {
  switch (code) {
    case grpc.status.OK:
      return 'completed';
    case grpc.status.CANCELLED:
      return 'cancelled';
    case grpc.status.DEADLINE_EXCEEDED:
      return 'expired';
    case grpc.status.RESOURCE_EXHAUSTED:
    case grpc.status.INVALID_ARGUMENT:
    case grpc.status.UNAVAILABLE:
      return 'refused';
    default:
      return 'failed';
  }
}

interface CallResult {
  code: grpc.status;
  details: string;
  ms: number;
  /** 'status' events seen; exactly 1 when nothing is lost or doubled. */
  statuses: number;
}

interface CallSpec {
  method: 'generate' | 'compare';
  request: Record<string, unknown>;
  deadlineMs?: number;
  /** Cancel from the client once this progress step was reported. */
  cancelAtStep?: number;
}

function call(client: DiffusionClient, spec: CallSpec): Promise<CallResult> {
  const options: grpc.CallOptions = spec.deadlineMs ? { deadline: Date.now() + spec.deadlineMs } : {};
  const stream =
    spec.method === 'generate'
      ? client.generate(spec.request, new grpc.Metadata(), options)
      : client.compare(spec.request, new grpc.Metadata(), options);
  const started = performance.now();
  return new Promise((resolve) => {
    let result: CallResult | undefined;
    stream.on('data', (e: { progress?: { step: number } }) => {
      if (spec.cancelAtStep !== undefined && e.progress && e.progress.step >= spec.cancelAtStep) stream.cancel();
    });
    stream.on('error', () => {});
    stream.on('status', (s: grpc.StatusObject) => {
      if (result) {
        result.statuses++;
        return;
      }
      result = { code: s.code, details: s.details, ms: performance.now() - started, statuses: 1 };
      // Wait a moment for a second status, which would be a bug.
      setTimeout(() => resolve(result!), 50);
    });
  });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

function settleHeap() {
  (globalThis as { gc?: () => void }).gc?.();
}

/** Print a scenario's figures; assert one final status per call. */
function report(name: string, results: CallResult[], rss?: { before: number; after: number }) {
  const counts: Record<Kind, number> = { completed: 0, cancelled: 0, expired: 0, refused: 0, failed: 0 };
  for (const r of results) counts[kindOf(r.code)]++;
  const ok = results
    .filter((r) => r.code === grpc.status.OK)
    .map((r) => r.ms)
    .sort((a, b) => a - b);
  const figures = [
    `${results.length} calls: ${Object.entries(counts)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    ok.length ? `completed p50 ${percentile(ok, 50).toFixed(0)} ms, p99 ${percentile(ok, 99).toFixed(0)} ms` : '',
    ok.length < results.length
      ? `slowest other ${Math.max(...results.filter((r) => r.code !== grpc.status.OK).map((r) => r.ms)).toFixed(0)} ms`
      : '',
    rss ? `RSS ${mb(rss.before)} -> ${mb(rss.after)} MiB` : '',
  ];
  const [calls, ...rest] = figures.filter(Boolean);
  console.log(`${name}\n  ${calls}${rest.length ? `\n  ${rest.join('; ')}` : ''}`);
  const lost = results.filter((r) => r.statuses !== 1);
  assert.equal(lost.length, 0, `${lost.length} calls without exactly one final status`);
  return counts;
}

async function withServer<T>(
  opts: Partial<ServerOptions> & { failStarts?: SharedArrayBuffer },
  body: (s: RunningServer, client: DiffusionClient, address: string) => Promise<T>,
): Promise<T> {
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    workers: 1,
    maxQueue: 64,
    maxBatch: 4,
    engineModule: FAKE_ENGINE,
    engineOptions: { stepMs: STEP_MS, failStarts: opts.failStarts },
    maxResponseBytes: 16 << 20,
    logger: pino({ level: 'silent' }),
    ...opts,
  });
  const address = `127.0.0.1:${server.port}`;
  const client = createDiffusionClient(address, grpc.credentials.createInsecure());
  try {
    const out = await body(server, client, address);
    assert.equal(server.queue.queued + server.queue.active, 0, 'the queue drained to zero');
    return out;
  } finally {
    client.close();
    await server.shutdown(0);
  }
}

const generate = (request: Record<string, unknown>, extra: Partial<CallSpec> = {}): CallSpec => ({
  method: 'generate',
  request,
  ...extra,
});

/** 16 clients x 4 mixed requests: plain, Compare, cancelled mid-way, short deadlines. */
async function load() {
  await withServer({}, async (server, _client, address) => {
    const clients = Array.from({ length: 16 }, () => createDiffusionClient(address, grpc.credentials.createInsecure()));
    await call(clients[0]!, generate({ prompt: 'warm-up', steps: 2 }));
    settleHeap();
    const before = process.memoryUsage().rss;
    const specs = (c: number): CallSpec[] => [
      generate({ prompt: `plain ${c}`, steps: 4 + (c % 4), seed: String(c) }),
      { method: 'compare', request: { prompt: `compare ${c}`, encoders: ['clip', 'safe-clip'], steps: 4 } },
      generate({ prompt: `cancel ${c}`, steps: 30 }, { cancelAtStep: 2 }),
      generate({ prompt: `deadline ${c}`, steps: 20 + c, width: 64 }, { deadlineMs: 150 + 20 * c }),
    ];
    const results = (
      await Promise.all(clients.map(async (client, c) => Promise.all(specs(c).map((s) => call(client, s)))))
    ).flat();
    for (const c of clients) c.close();
    await new Promise((r) => setTimeout(r, 200));
    settleHeap();
    const after = process.memoryUsage().rss;
    const counts = report('load (16 clients x 4 mixed)', results, { before, after });
    assert.equal(counts.failed, 0);
    assert.ok(counts.completed >= 32, 'plain and compare calls complete');
    assert.ok(after < before * 1.1, 'RSS back within 10%');
    const text = await server.metrics.registry.metrics();
    console.log(
      '  server outcomes:',
      [...text.matchAll(/safesd_requests_total\{outcome="(\w+)"\} (\d+)/g)].map((m) => `${m[1]} ${m[2]}`).join(', '),
    );
  });
}

/** 48 requests at once against a queue of 8. */
async function burst() {
  await withServer({ maxQueue: 8, maxBatch: 2 }, async (_server, client) => {
    const results = await Promise.all(
      Array.from({ length: 48 }, (_, i) =>
        call(client, generate({ prompt: `burst ${i}`, steps: 3, width: 32 + 8 * (i % 3) })),
      ),
    );
    const counts = report('burst past the queue limit (48 at once, queue 8)', results);
    assert.ok(counts.refused > 0, 'some are refused with RESOURCE_EXHAUSTED');
    assert.equal(counts.completed + counts.refused, 48);
  });
}

/** Worker faults, each beside innocent requests; health must come back to SERVING. */
async function workerFaults() {
  const failStarts = new SharedArrayBuffer(4);
  await withServer({ workerStallMs: 500, restartDelayMs: 100, failStarts }, async (_server, client, address) => {
    const Health = grpc.makeGenericClientConstructor(healthService, 'Health');
    const h = new Health(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      check(r: { service: string }, cb: (e: grpc.ServiceError | null, r: { status: string }) => void): void;
    };
    const status = () => new Promise<string>((res) => h.check({ service: '' }, (e, r) => res(e ? 'ERROR' : r.status)));
    const all: CallResult[] = [];
    for (const fault of ['engine-throw', 'engine-crash', 'engine-hang', 'cannot-restart']) {
      if (fault === 'cannot-restart') Atomics.store(new Int32Array(failStarts), 0, 3);
      const prompt = fault === 'cannot-restart' ? 'engine-crash' : fault;
      const faulty = call(client, generate({ prompt, steps: 3 }));
      await new Promise((r) => setTimeout(r, 20));
      const innocent = Array.from({ length: 3 }, (_, i) =>
        call(client, generate({ prompt: `innocent ${i}`, steps: 3, width: 40 })),
      );
      const results = [await faulty, ...(await Promise.all(innocent))];
      let waited = 0;
      while ((await status()) !== 'SERVING' && waited < 30_000) {
        await new Promise((r) => setTimeout(r, 50));
        waited += 50;
      }
      const after = await call(client, generate({ prompt: 'after the fault', steps: 2 }));
      const counts = report(`worker fault ${fault}`, [...results, after]);
      assert.equal(results[0]!.code, grpc.status.INTERNAL, `${fault}: the faulty request fails`);
      assert.equal(after.code, grpc.status.OK, `${fault}: served again after ${waited} ms`);
      if (fault !== 'cannot-restart') assert.equal(counts.completed, 4, `${fault}: innocent requests complete`);
      all.push(...results, after);
    }
    h.close();
  });
}

/**
 * The huge requests of issue 14 beside small ones: refused at once. Then a long request within the limits: admitted,
 * and overtaken by the small ones. Either way small latency stays within one UNet call of normal.
 */
async function hugeBesideSmall() {
  await withServer({}, async (_server, client) => {
    const small = () => call(client, generate({ prompt: 'small', steps: 4 }));
    await small();
    const alone: CallResult[] = [];
    for (let i = 0; i < 10; i++) alone.push(await small());
    const beside: CallResult[] = [];
    const huge: Promise<CallResult>[] = [];
    for (let i = 0; i < 10; i++) {
      huge.push(
        call(
          client,
          generate({ prompt: 'huge', width: 2048, height: 2048, steps: 1000, numImages: 16 }, { deadlineMs: 10_000 }),
        ),
      );
      huge.push(
        call(client, {
          method: 'compare',
          request: {
            prompt: 'huge compare',
            encoders: ['clip', 'safe-clip', 'clip', 'safe-clip', 'clip', 'safe-clip', 'clip', 'safe-clip'],
            numImages: 16,
            width: 64,
            height: 64,
            steps: 1000,
          },
        }),
      );
      beside.push(await small());
    }
    const hugeResults = await Promise.all(huge);
    report('small requests alone', alone);
    report('small requests beside huge ones', beside);
    const counts = report('huge requests', hugeResults);
    assert.equal(counts.refused, hugeResults.length, 'huge requests are refused at once');
    assert.ok(Math.max(...hugeResults.map((r) => r.ms)) < 1000, 'refused within a second');
    const p50 = (rs: CallResult[]) =>
      percentile(
        rs.map((r) => r.ms).sort((a, b) => a - b),
        50,
      );
    console.log(`  small p50 alone ${p50(alone).toFixed(0)} ms, beside huge ${p50(beside).toFixed(0)} ms`);
    // Generous for a loaded machine: one call, plus scheduling noise.
    assert.ok(p50(beside) <= p50(alone) + STEP_MS + 50, 'small latency within one UNet call of normal');

    // A long request within the limits and without a deadline is admitted; the small ones overtake it.
    const long = call(client, generate({ prompt: 'long', steps: 1000, width: 64, height: 64 }, { cancelAtStep: 200 }));
    await new Promise((r) => setTimeout(r, 200));
    const besideLong: CallResult[] = [];
    for (let i = 0; i < 10; i++) besideLong.push(await small());
    report('small requests beside a long admitted one', besideLong);
    report('the long one (cancelled by its client at step 200)', [await long]);
    console.log(`  small p50 alone ${p50(alone).toFixed(0)} ms, beside the long one ${p50(besideLong).toFixed(0)} ms`);
    assert.ok(p50(besideLong) <= p50(alone) + STEP_MS + 50, 'small latency within one UNet call of normal');
  });
}

interface Child {
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  port: number;
  pid: number;
  kill(signal: NodeJS.Signals): void;
}

/** `safe-sd serve` (or `npm start`) with the fake engine, or the real one on the toy model; resolves when listening. */
async function spawnServer(viaNpm: boolean, realEngine = false): Promise<Child> {
  const args = ['--port', '0', '--grace-seconds', '20'];
  const env = realEngine
    ? { ...process.env, SAFE_SD_CACHE: process.env.SAFE_SD_CACHE ?? mkdtempSync(join(tmpdir(), 'faults-cache-')) }
    : { ...process.env, SAFE_SD_ENGINE_MODULE: FAKE_ENGINE, FAKE_ENGINE_STEP_MS: String(STEP_MS) };
  const child = viaNpm
    ? spawn('npm', ['start', '--silent', '--', ...args], { cwd: ROOT, env })
    : spawn(process.execPath, ['bin/safe-sd.js', 'serve', ...args], { cwd: ROOT, env });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => r({ code, signal })),
  );
  let out = '';
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"address":"127\.0\.0\.1:(\d+)"/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', () => reject(new Error(`server exited early: ${out}`)));
  });
  return { exited, port, pid: child.pid!, kill: (s) => child.kill(s) };
}

async function listening(port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/**
 * SIGTERM, a double signal, and SIGTERM through `npm start`, each while requests run; the double signal also with
 * the real engine on the toy model, whose worker is inside onnxruntime when the signals come (it used to abort, 134).
 */
async function signals() {
  for (const [name, viaNpm, second, real] of [
    ['SIGTERM', false, undefined, false],
    ['SIGTERM then SIGINT', false, 'SIGINT', false],
    ['SIGTERM twice', false, 'SIGTERM', false],
    ['SIGTERM through npm start', true, undefined, false],
    ['SIGTERM then SIGINT, real engine (toy)', false, 'SIGINT', true],
  ] as const) {
    const child = await spawnServer(viaNpm, real);
    const client = createDiffusionClient(`127.0.0.1:${child.port}`, grpc.credentials.createInsecure());
    const request = real ? { width: 128, height: 128, numImages: 4, steps: 300 } : { steps: 40 };
    const running = Array.from({ length: 4 }, (_, i) => call(client, generate({ prompt: `running ${i}`, ...request })));
    await new Promise((r) => setTimeout(r, real ? 1500 : 150));
    child.kill('SIGTERM');
    if (second) {
      await new Promise((r) => setTimeout(r, 150));
      child.kill(second);
    }
    const results = await Promise.all(running);
    const { code, signal } = await child.exited;
    client.close();
    const counts = report(`${name} (exit ${code ?? signal})`, results);
    assert.equal(code, 0, `${name}: exit 0, got ${code ?? signal}`);
    assert.equal(await listening(child.port), false, `${name}: nothing left listening`);
    if (second) assert.equal(counts.refused + counts.completed, 4, 'each request completed or ended UNAVAILABLE');
    else assert.equal(counts.completed, 4, 'the grace lets running requests finish');
  }
}

const started = performance.now();
for (const [name, scenario] of [
  ['load', load],
  ['burst', burst],
  ['worker faults', workerFaults],
  ['huge beside small', hugeBesideSmall],
  ['signals', signals],
] as const) {
  try {
    await scenario();
  } catch (e) {
    console.error(`FAILED ${name}: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}
console.log(`faults suite: ${((performance.now() - started) / 1000).toFixed(1)} s`);
process.exit();
