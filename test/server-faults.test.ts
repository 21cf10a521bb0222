import test from 'ava';

import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import {
  createDiffusionClient,
  type DiffusionClient,
  type GenerateEventMsg,
  type GenerateRequestMsg,
} from '../src/grpc/proto.js';
import { timeoutMs } from '../src/grpc/far-deadlines.js';
import { testServerOptions } from './helpers/test-server.js';
import { startServer, type RunningServer, type ServerOptions } from '../src/server/server.js';
import { freePort } from './helpers/processes.js';

interface Harness {
  server: RunningServer;
  client: DiffusionClient;
  address: string;
  failStarts: Int32Array;
}

async function withServer(opts: Partial<ServerOptions> & { stepMs?: number }, body: (h: Harness) => Promise<void>) {
  const failStarts = new SharedArrayBuffer(4);
  const server = await startServer(
    testServerOptions({ engineOptions: { stepMs: opts.stepMs ?? 5, failStarts }, ...opts }),
  );
  const address = `127.0.0.1:${server.port}`;
  const client = createDiffusionClient(address, grpc.credentials.createInsecure());
  try {
    await body({ server, client, address, failStarts: new Int32Array(failStarts) });
  } finally {
    client.close();
    await server.shutdown(0);
  }
}

interface Outcome {
  events: GenerateEventMsg[];
  error?: grpc.ServiceError;
}

function generate(client: DiffusionClient, req: Partial<GenerateRequestMsg>, options: grpc.CallOptions = {}) {
  const stream = client.generate(req, new grpc.Metadata(), options);
  const events: GenerateEventMsg[] = [];
  return new Promise<Outcome>((resolve) => {
    stream.on('data', (e: GenerateEventMsg) => events.push(e));
    stream.on('error', (error: grpc.ServiceError) => resolve({ events, error }));
    stream.on('end', () => resolve({ events }));
  });
}

function health(address: string) {
  const Ctor = grpc.makeGenericClientConstructor(healthService, 'Health');
  const c = new Ctor(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    check(req: { service: string }, cb: (err: grpc.ServiceError | null, res: { status: string }) => void): void;
  };
  return {
    status: () => new Promise<string>((res, rej) => c.check({ service: '' }, (e, r) => (e ? rej(e) : res(r.status)))),
    close: () => c.close(),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => Promise<boolean> | boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test.serial(
  'an uncaught exception fails only its own request: the one queued behind it runs on a new worker',
  async (t) => {
    await withServer({}, async ({ client }) => {
      const thrower = generate(client, { prompt: 'engine-throw', steps: 2 });
      await sleep(10);
      const innocent = generate(client, { prompt: 'innocent', steps: 2, width: 64 });
      const [bad, good] = await Promise.all([thrower, innocent]);
      t.is(bad.error?.code, grpc.status.INTERNAL);
      t.regex(bad.error!.details, /crashed: fake uncaught exception/);
      t.is(good.error, undefined, good.error?.details);
    });
  },
);

test.serial('a worker that cannot restart is retried with backoff; health says NOT_SERVING meanwhile', async (t) => {
  await withServer({ restartDelayMs: 100, http: { port: 0 } }, async ({ server, client, address, failStarts }) => {
    const h = health(address);
    const httpHealth = async () => {
      const res = await fetch(`http://127.0.0.1:${server.httpPort}/health`);
      return [res.status, ((await res.json()) as { status: string }).status];
    };
    t.is(await h.status(), 'SERVING');
    t.deepEqual(await httpHealth(), [200, 'SERVING']);
    Atomics.store(failStarts, 0, 3);
    const crashed = await generate(client, { prompt: 'engine-crash', steps: 1 });
    t.is(crashed.error?.code, grpc.status.INTERNAL);
    await until('NOT_SERVING', async () => (await h.status()) === 'NOT_SERVING');
    t.deepEqual(await httpHealth(), [503, 'NOT_SERVING']);
    await until('a failed restart', () => Atomics.load(failStarts, 0) <= 2);
    const refused = await generate(client, { prompt: 'while down', steps: 1 });
    t.is(refused.error?.code, grpc.status.UNAVAILABLE);
    t.regex(refused.error!.details, /no inference worker is running \(restarting failed: .*start failure injected/);
    // Three failures at 100, 200, 400 ms of backoff, then the fourth start succeeds.
    await until('SERVING again', async () => (await h.status()) === 'SERVING', 30_000);
    t.true(Atomics.load(failStarts, 0) <= 0);
    t.is((await generate(client, { prompt: 'after', steps: 1 })).error, undefined);
    h.close();
  });
});

test.serial('a hung worker is abandoned after the stall limit; the request queued behind it runs', async (t) => {
  await withServer({ workerStallMs: 300 }, async ({ client }) => {
    const hung = generate(client, { prompt: 'engine-hang', steps: 2 });
    await sleep(20);
    const next = generate(client, { prompt: 'next', steps: 2, width: 64 });
    const [h, n] = await Promise.all([hung, next]);
    t.is(h.error?.code, grpc.status.INTERNAL);
    t.regex(h.error!.details, /reported nothing for 0 s; replaced/);
    t.is(n.error, undefined, n.error?.details);
  });
});

test.serial(
  'deadlines: 30 days away is served; a short one ends as DEADLINE_EXCEEDED and is counted as expired',
  async (t) => {
    t.is(timeoutMs('2592000S'), 2_592_000_000);
    await withServer({ stepMs: 20 }, async ({ client, server }) => {
      // First, while no step was timed yet (afterwards admission would refuse it at once).
      const near = await generate(client, { prompt: 'near', steps: 100 }, { deadline: Date.now() + 150 });
      t.is(near.error?.code, grpc.status.DEADLINE_EXCEEDED);
      const far = await generate(client, { prompt: 'far', steps: 2 }, { deadline: Date.now() + 30 * 24 * 3600 * 1000 });
      t.is(far.error, undefined, far.error?.details);
      await sleep(50);
      const text = await server.metrics.registry.metrics();
      t.regex(text, /safesd_requests_total\{outcome="expired"\} 1/);
      t.notRegex(text, /outcome="cancelled"/);
      t.regex(text, /safesd_request_duration_seconds_count\{method="Generate",code="DEADLINE_EXCEEDED"\} 1/);
    });
  },
);

test.serial('undecodable request bytes get INVALID_ARGUMENT', async (t) => {
  await withServer({}, async ({ client }) => {
    const raw = client.makeServerStreamRequest(
      '/safesd.v1.Diffusion/Generate',
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from([0xff, 0xff, 0xff]),
    );
    const error = await new Promise<grpc.ServiceError>((resolve) => {
      raw.on('data', () => {});
      raw.on('error', resolve);
    });
    t.is(error.code, grpc.status.INVALID_ARGUMENT);
    t.regex(error.details, /undecodable GenerateRequest/);
  });
});

test.serial(
  'a request over the limits is refused at once; one too slow for its deadline too, once steps were timed',
  async (t) => {
    await withServer({ stepMs: 20 }, async ({ client, server }) => {
      const huge = await generate(client, { prompt: 'huge', width: 2048, height: 2048, steps: 1000 });
      t.is(huge.error?.code, grpc.status.INVALID_ARGUMENT);
      t.regex(huge.error!.details, /2048x2048 is 4194304 pixels, over pipeline 'toy''s limit of 4096/);
      const compare = await new Promise<grpc.ServiceError | undefined>((resolve) => {
        const s = client.compare({
          prompt: 'x',
          encoders: ['clip', 'safe-clip'],
          numImages: 16,
          width: 64,
          height: 64,
        });
        s.on('data', () => {});
        s.on('error', resolve);
        s.on('end', () => resolve(undefined));
      });
      t.is(compare?.code, grpc.status.INVALID_ARGUMENT);
      t.regex(compare!.details, /2 encoder\(s\) x 16 image\(s\) at 64x64 is 131072 pixels, over .* limit of 16384/);

      t.is((await generate(client, { prompt: 'timed', steps: 5 })).error, undefined);
      t.truthy(server.queue.rates.rate('toy'));
      // Refused at submission (the message says why), never queued, not run until the deadline.
      const slow = await generate(client, { prompt: 'slow', steps: 1000 }, { deadline: Date.now() + 2000 });
      t.is(slow.error?.code, grpc.status.DEADLINE_EXCEEDED);
      t.regex(slow.error!.details, /needs about \d+ s \(1000 steps at \d+ ms measured per step\)/);
      t.is(slow.events.length, 0);
    });
  },
);

test.serial('a short request overtakes a long one on the same worker, stepping first; both complete', async (t) => {
  await withServer({ stepMs: 10 }, async ({ client }) => {
    let longDone = 0;
    const long = generate(client, { prompt: 'long', steps: 300 }).then((o) => {
      longDone = performance.now();
      return o;
    });
    await sleep(300);
    const started = performance.now();
    const short = await generate(client, { prompt: 'short', steps: 4, width: 64 });
    const shortDone = performance.now();
    t.is(short.error, undefined);
    t.log(`short request: ${(shortDone - started).toFixed(0)} ms beside a 300-step one (10 ms per step)`);
    t.is((await long).error, undefined);
    // Without overtaking it would have waited for all 300 steps of the long one.
    t.true(longDone > shortDone, 'the short request finished first');
  });
});

test.serial('/metrics follows the bearer token', async (t) => {
  const metricsPort = await freePort();
  await withServer({ token: 's3cret', metricsPort }, async () => {
    const url = `http://127.0.0.1:${metricsPort}/metrics`;
    t.is((await fetch(url)).status, 401);
    t.is((await fetch(url, { headers: { authorization: 'Bearer nope' } })).status, 401);
    const ok = await fetch(url, { headers: { authorization: 'Bearer s3cret' } });
    t.is(ok.status, 200);
    t.regex(await ok.text(), /safesd_queue_depth/);
  });
});
