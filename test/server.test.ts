import test from 'ava';

// Serial: the fake engine's steps are timed, and tests that count them should not share the CPU.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { service as healthService } from 'grpc-health-check';
import {
  createDiffusionClient,
  type CompareEventMsg,
  type CompareResultMsg,
  type DiffusionClient,
  type GenerateEventMsg,
  type GenerateRequestMsg,
  type ImageMsg,
} from '../src/grpc/proto.js';
import { FAKE_ENGINE, testServerOptions } from './helpers/test-server.js';
import { startServer, type RunningServer, type ServerOptions } from '../src/server/server.js';
import { BATCHES_RUN, LARGEST_BATCH, STEPS_EXECUTED } from './helpers/fake-engine.js';
import { freePort } from './helpers/processes.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47]);

interface Harness {
  server: RunningServer;
  client: DiffusionClient;
  address: string;
  counters: Int32Array;
}

async function withServer(
  opts: Partial<ServerOptions> & { stepMs?: number },
  body: (h: Harness) => Promise<void>,
): Promise<void> {
  const counters = new SharedArrayBuffer(12);
  const server = await startServer(
    testServerOptions({ engineOptions: { manifest: 'fake', stepMs: opts.stepMs ?? 5, counters }, ...opts }),
  );
  const address = `127.0.0.1:${server.port}`;
  const client = createDiffusionClient(address, grpc.credentials.createInsecure());
  try {
    await body({ server, client, address, counters: new Int32Array(counters) });
  } finally {
    client.close();
    await server.shutdown(0);
  }
}

interface Outcome<E> {
  events: E[];
  error?: grpc.ServiceError;
}

function collect<E>(stream: grpc.ClientReadableStream<E>, onEvent?: (e: E) => void): Promise<Outcome<E>> {
  const events: E[] = [];
  return new Promise((resolve) => {
    stream.on('data', (e: E) => {
      events.push(e);
      onEvent?.(e);
    });
    stream.on('error', (error: grpc.ServiceError) => resolve({ events, error }));
    stream.on('end', () => resolve({ events }));
  });
}

function generate(client: DiffusionClient, req: Partial<GenerateRequestMsg>, options: grpc.CallOptions = {}) {
  const stream = client.generate(req, new grpc.Metadata(), options);
  return { stream, done: collect<GenerateEventMsg>(stream) };
}

function images(o: Outcome<GenerateEventMsg>): ImageMsg[] {
  const r = o.events.find((e) => 'result' in e && e.result);
  if (!r?.result) throw new Error(`no result (${o.error?.details ?? 'stream ended'})`);
  return r.result.images;
}

function compareResult(o: Outcome<CompareEventMsg>): CompareResultMsg {
  const r = o.events.find((e) => 'result' in e && e.result);
  if (!r?.result) throw new Error(`no result (${o.error?.details ?? 'stream ended'})`);
  return r.result;
}

/** Resolves once the stream reports a progress step >= `step`. */
function progressed(stream: grpc.ClientReadableStream<GenerateEventMsg>, step: number): Promise<number> {
  return new Promise((resolve) => {
    stream.on('data', (e: GenerateEventMsg) => {
      if ('progress' in e && e.progress && e.progress.step >= step) resolve(e.progress.step);
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test.serial('generate streams queue position and progress, then a PNG with the seed used', async (t) => {
  await withServer({}, async ({ client }) => {
    const out = await generate(client, { prompt: 'a lighthouse', seed: '42', steps: 3 }).done;
    t.is(out.error, undefined);
    t.deepEqual(out.events[0], { queued: { position: 0 }, event: 'queued' });
    const steps = out.events.flatMap((e) => ('progress' in e && e.progress ? [e.progress.step] : []));
    t.deepEqual(steps, [1, 2, 3]);
    const [img] = images(out);
    t.deepEqual(Buffer.from(img!.png).subarray(0, 4), PNG_SIGNATURE);
    t.like(img, { seed: '42', encoder: 'clip', width: 32, height: 32, steps: 3, scheduler: 'ddim', pipeline: 'toy' });
    t.is(img!.guidanceScale, 7.5);

    const random = images(await generate(client, { prompt: 'a lighthouse', steps: 1 }).done);
    t.regex(random[0]!.seed, /^\d+$/);
  });
});

// That different encoders give different pictures is a property of the real engine: test/server-toy.test.ts shows it.
test.serial('compare: one seed for all columns; equal encoders give equal images', async (t) => {
  await withServer({}, async ({ client, counters }) => {
    const req = { prompt: 'a red fox', seed: '5', steps: 2 };
    const same = compareResult(await collect<CompareEventMsg>(client.compare({ ...req, encoders: ['clip', 'clip'] })));
    t.is(same.seed, '5');
    t.deepEqual(
      same.columns.map((c) => c.encoder),
      ['clip', 'clip'],
    );
    t.deepEqual(Buffer.from(same.columns[0]!.images[0]!.png), Buffer.from(same.columns[1]!.images[0]!.png));

    const diff = compareResult(
      await collect<CompareEventMsg>(client.compare({ ...req, encoders: ['safe-clip', 'clip'] })),
    );
    t.deepEqual(
      diff.columns.map((c) => c.encoder),
      ['safe-clip', 'clip'],
    );
    // The clip column matches the earlier run: same seed, same noise.
    t.deepEqual(Buffer.from(diff.columns[1]!.images[0]!.png), Buffer.from(same.columns[0]!.images[0]!.png));
    t.is(Atomics.load(counters, BATCHES_RUN), 2, 'each compare ran as one batch');
    t.is(Atomics.load(counters, LARGEST_BATCH), 2);
  });
});

test.serial('a cancelled request stops running and frees the worker', async (t) => {
  await withServer({ stepMs: 20 }, async ({ client, counters }) => {
    const long = generate(client, { prompt: 'slow', steps: 200 });
    const seen = await progressed(long.stream, 3);
    long.stream.cancel();
    const out = await long.done;
    t.is(out.error?.code, grpc.status.CANCELLED);
    await sleep(100);
    const executed = Atomics.load(counters, STEPS_EXECUTED);
    // How many steps run between the client's cancel and the worker seeing it depends on the machine's load.
    t.true(executed >= seen && executed < 200, `ran ${executed} of 200 steps`);
    await sleep(100);
    t.is(Atomics.load(counters, STEPS_EXECUTED), executed, 'no steps after cancellation');

    // 200 steps would take 4 s; the next request only gets 2 s.
    const next = await generate(client, { prompt: 'next', steps: 2 }, { deadline: Date.now() + 2000 }).done;
    t.is(next.error, undefined);
    t.is(images(next).length, 1);
  });
});

test.serial('a request past its deadline gets DEADLINE_EXCEEDED and stops running', async (t) => {
  await withServer({ stepMs: 10 }, async ({ client, counters }) => {
    const out = await generate(client, { prompt: 'slow', steps: 100 }, { deadline: Date.now() + 200 }).done;
    t.is(out.error?.code, grpc.status.DEADLINE_EXCEEDED);
    await sleep(60);
    const executed = Atomics.load(counters, STEPS_EXECUTED);
    t.true(executed < 100, `ran ${executed} of 100 steps`);
    await sleep(100);
    t.is(Atomics.load(counters, STEPS_EXECUTED), executed, 'no steps after the deadline');
    const next = await generate(client, { prompt: 'next', steps: 2 }, { deadline: Date.now() + 1000 }).done;
    t.is(next.error, undefined);
  });
});

test.serial('a full queue answers RESOURCE_EXHAUSTED naming the limit', async (t) => {
  await withServer({ stepMs: 10, maxQueue: 2, maxBatch: 1 }, async ({ client }) => {
    const running = generate(client, { prompt: 'running', steps: 100 });
    await progressed(running.stream, 1);
    // 30 steps: not short enough beside the running request's 100 to overtake it, so they wait in the queue.
    const queued = [generate(client, { prompt: 'q1', steps: 30 }), generate(client, { prompt: 'q2', steps: 30 })];
    await sleep(50);
    const rejected = await generate(client, { prompt: 'one too many' }).done;
    t.is(rejected.error?.code, grpc.status.RESOURCE_EXHAUSTED);
    t.regex(rejected.error!.details, /limit 2/);
    running.stream.cancel();
    for (const [position, q] of queued.entries()) {
      const out = await q.done;
      t.is(out.error, undefined, 'queued requests still run');
      t.deepEqual(out.events[0], { queued: { position }, event: 'queued' });
    }
  });
});

test.serial('invalid requests get INVALID_ARGUMENT with a readable message', async (t) => {
  await withServer({}, async ({ client }) => {
    const cases: Array<[Partial<GenerateRequestMsg>, RegExp]> = [
      [{ prompt: '' }, /prompt is empty/],
      [{ prompt: '   ' }, /prompt is empty/],
      [{ prompt: 'x', width: 100 }, /width 100 is not a positive multiple of 8/],
      [{ prompt: 'x', height: 36 }, /height 36 is not a positive multiple of 8/],
      [{ prompt: 'x', encoder: 'nope' }, /unknown encoder 'nope'.*available: clip, safe-clip/],
      [{ prompt: 'x', pipeline: 'sdxl' }, /unknown pipeline 'sdxl'/],
      [{ prompt: 'x', steps: 1001 }, /steps 1001 is outside 1\.\.1000/],
      [{ prompt: 'x', guidanceScale: NaN }, /guidance scale NaN must be a finite number/],
      [{ prompt: 'x', scheduler: 'magic' }, /unknown scheduler 'magic'/],
      // Passes the server's checks, rejected by the engine's own resolve inside the worker.
      [{ prompt: 'engine-reject' }, /prompt rejected by the fake engine/],
    ];
    for (const [req, message] of cases) {
      const out = await generate(client, req).done;
      t.is(out.error?.code, grpc.status.INVALID_ARGUMENT, JSON.stringify(req));
      t.regex(out.error?.details ?? '', message);
    }
    const compare = await collect<CompareEventMsg>(client.compare({ prompt: 'x', encoders: ['clip'] }));
    t.is(compare.error?.code, grpc.status.INVALID_ARGUMENT);
    t.regex(compare.error!.details, /at least 2 encoders, got 1/);

    const failed = await generate(client, { prompt: 'engine-fail', steps: 1 }).done;
    t.is(failed.error?.code, grpc.status.INTERNAL);
    t.regex(failed.error!.details, /fake engine failure/);
  });
});

test.serial('a crashed worker fails its batch with INTERNAL and is replaced', async (t) => {
  await withServer({}, async ({ client }) => {
    const crashed = await generate(client, { prompt: 'engine-crash', steps: 1 }).done;
    t.is(crashed.error?.code, grpc.status.INTERNAL);
    t.regex(crashed.error!.details, /inference worker 0 exited with code 3/);
    const next = await generate(client, { prompt: 'after the crash', steps: 1 }).done;
    t.is(next.error, undefined);
  });
});

test.serial('ListModels lists pipelines and encoders', async (t) => {
  await withServer({}, async ({ client }) => {
    const res = await new Promise<unknown>((resolve, reject) =>
      client.listModels({}, new grpc.Metadata(), {}, (err, r) => (err ? reject(err) : resolve(r))),
    );
    t.like(res, {
      pipelines: [{ name: 'toy', defaultEncoder: 'clip', defaultWidth: 32, defaultSteps: 4 }],
      encoders: [
        { name: 'clip', safeClip: false },
        { name: 'safe-clip', safeClip: true },
      ],
    });
  });
});

function healthClient(address: string) {
  const Ctor = grpc.makeGenericClientConstructor(healthService, 'Health');
  return new Ctor(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    check(req: { service: string }, cb: (err: grpc.ServiceError | null, res: { status: string }) => void): void;
  };
}

function check(h: ReturnType<typeof healthClient>, service = '') {
  return new Promise<string>((resolve, reject) =>
    h.check({ service }, (err, res) => (err ? reject(err) : resolve(res.status))),
  );
}

test.serial('health answers while the worker is busy', async (t) => {
  await withServer({ stepMs: 50 }, async ({ client, address, counters }) => {
    const h = healthClient(address);
    t.is(await check(h), 'SERVING');
    const long = generate(client, { prompt: 'slow', steps: 40 });
    await progressed(long.stream, 1);
    for (let i = 0; i < 10; i++) t.is(await check(h, 'safesd.v1.Diffusion'), 'SERVING');
    // Ten answers came while the job was still running: the health service does not wait for the worker.
    t.true(Atomics.load(counters, STEPS_EXECUTED) < 40);
    long.stream.cancel();
    await long.done;
    h.close();
  });
});

test.serial('reflection lists safesd.v1.Diffusion', async (t) => {
  await withServer({}, async ({ address }) => {
    const require = createRequire(import.meta.url);
    const protoFile = require.resolve('@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto');
    const def = protoLoader.loadSync(protoFile, { keepCase: true, oneofs: true });
    const Ctor = grpc.makeGenericClientConstructor(
      def['grpc.reflection.v1.ServerReflection'] as grpc.ServiceDefinition,
      'ServerReflection',
    );
    const r = new Ctor(address, grpc.credentials.createInsecure());
    const call = r.makeBidiStreamRequest(
      '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
      (def['grpc.reflection.v1.ServerReflection'] as grpc.ServiceDefinition).ServerReflectionInfo!.requestSerialize,
      (def['grpc.reflection.v1.ServerReflection'] as grpc.ServiceDefinition).ServerReflectionInfo!.responseDeserialize,
    );
    const response = await new Promise<{ list_services_response: { service: Array<{ name: string }> } }>(
      (resolve, reject) => {
        call.on('data', resolve);
        call.on('error', reject);
        call.write({ list_services: '' });
      },
    );
    call.end();
    r.close();
    const names = response.list_services_response.service.map((s) => s.name);
    t.true(names.includes('safesd.v1.Diffusion'), names.join(', '));
  });
});

test.serial('8 concurrent clients are all served, in batches, and the metrics show it', async (t) => {
  const metricsPort = await freePort();
  await withServer({ stepMs: 10, maxBatch: 4, metricsPort }, async ({ address, counters }) => {
    const clients = Array.from({ length: 8 }, () => createDiffusionClient(address, grpc.credentials.createInsecure()));
    const outs = await Promise.all(
      clients.map((c, i) =>
        collect<GenerateEventMsg>(c.generate({ prompt: `prompt ${i}`, seed: String(i), steps: 5 })),
      ),
    );
    for (const c of clients) c.close();
    outs.forEach((o, i) => {
      t.is(o.error, undefined);
      t.is(images(o)[0]!.seed, String(i));
    });
    t.true(Atomics.load(counters, LARGEST_BATCH) > 1);
    t.true(Atomics.load(counters, BATCHES_RUN) < 8);

    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const count = Number(/^safesd_batch_size_count (\d+)/m.exec(text)?.[1]);
    const sum = Number(/^safesd_batch_size_sum (\d+)/m.exec(text)?.[1]);
    t.is(sum, 8, 'every job went through a batch');
    t.true(count < 8, `${count} batches for 8 jobs`);
    t.regex(text, /safesd_images_generated_total\{encoder="clip"\} 8/);
    t.regex(text, /safesd_request_duration_seconds_count\{method="Generate",code="OK"\} 8/);
    t.regex(text, /safesd_queue_depth 0/);
  });
});

test.serial('a bearer token is required, except for health', async (t) => {
  await withServer({ token: 's3cret' }, async ({ client, address }) => {
    const missing = await generate(client, { prompt: 'x', steps: 1 }).done;
    t.is(missing.error?.code, grpc.status.UNAUTHENTICATED);
    const wrong = new grpc.Metadata();
    wrong.set('authorization', 'Bearer nope');
    t.is((await collect(client.generate({ prompt: 'x', steps: 1 }, wrong))).error?.code, grpc.status.UNAUTHENTICATED);
    const right = new grpc.Metadata();
    right.set('authorization', 'Bearer s3cret');
    t.is((await collect(client.generate({ prompt: 'x', steps: 1 }, right))).error, undefined);
    const h = healthClient(address);
    t.is(await check(h), 'SERVING');
    h.close();
  });
});

/** Start `safe-sd serve` with the fake engine; resolves with the child and its port once it listens. */
async function spawnServer(graceSeconds: number) {
  const child = spawn(
    process.execPath,
    ['bin/safe-sd.js', 'serve', '--port', '0', '--metrics-port', '0', '--grace-seconds', String(graceSeconds)],
    { cwd: ROOT, env: { ...process.env, SAFE_SD_ENGINE_MODULE: FAKE_ENGINE, FAKE_ENGINE_STEP_MS: '20' } },
  );
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"address":"127\.0\.0\.1:(\d+)"/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', () => reject(new Error(`server exited early: ${out}`)));
  });
  return { child, port, exited };
}

test.serial('SIGTERM lets a running request finish, then exits 0', async (t) => {
  const { child, port, exited } = await spawnServer(10);
  const client = createDiffusionClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const running = generate(client, { prompt: 'finish me', steps: 15 });
  await progressed(running.stream, 1);
  child.kill('SIGTERM');
  await sleep(100);
  const late = await generate(client, { prompt: 'too late' }).done;
  t.is(late.error?.code, grpc.status.UNAVAILABLE);
  const out = await running.done;
  t.is(out.error, undefined);
  t.is(images(out).length, 1);
  t.is(await exited, 0);
  client.close();
});

test.serial('SIGTERM past the grace period ends a running request with UNAVAILABLE, exit 0', async (t) => {
  const { child, port, exited } = await spawnServer(0);
  const client = createDiffusionClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const running = generate(client, { prompt: 'too slow', steps: 500 });
  await progressed(running.stream, 1);
  child.kill('SIGTERM');
  const out = await running.done;
  t.is(out.error?.code, grpc.status.UNAVAILABLE);
  t.is(await exited, 0);
  client.close();
});
