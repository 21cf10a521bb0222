/**
 * The HTTP face's edges on the fake engine: errors in the style of the API called, the body cap, the bearer token,
 * CORS only when asked, queue limits, and cancellation when the client goes away or A1111's interrupt is called.
 */
import test from 'ava';
import { startServer, type RunningServer, type ServerOptions } from '../src/server/server.js';
import { STEPS_EXECUTED } from './helpers/fake-engine.js';
import { testServerOptions } from './helpers/test-server.js';

interface Harness {
  server: RunningServer;
  base: string;
  counters: Int32Array;
}

async function withServer(
  opts: Partial<ServerOptions> & { stepMs?: number; cors?: string },
  body: (h: Harness) => Promise<void>,
): Promise<void> {
  const counters = new SharedArrayBuffer(12);
  const server = await startServer(
    testServerOptions({
      engineOptions: { manifest: 'fake', stepMs: opts.stepMs ?? 2, counters },
      http: { port: 0, corsOrigin: opts.cors },
      ...opts,
    }),
  );
  try {
    await body({ server, base: `http://127.0.0.1:${server.httpPort}`, counters: new Int32Array(counters) });
  } finally {
    await server.shutdown(0);
  }
}

async function call(base: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: JSON.parse(text || 'null') };
}

test('every error is JSON in the style of the API called: A1111 `detail`, OpenAI `error.message`', async (t) => {
  await withServer({}, async ({ base }) => {
    const invalidType = await call(base, '/sdapi/v1/txt2img', { prompt: 'x', steps: 'many' });
    t.is(invalidType.status, 422);
    t.deepEqual(invalidType.json.detail[0].loc, ['body', 'steps']);

    for (const [body, pattern] of [
      [{ prompt: 'x', sampler_name: 'DPM++ SDE' }, /sampler 'DPM\+\+ SDE' is not available/],
      [{ prompt: 'x', text_encoder: 'nope' }, /unknown encoder 'nope' for pipeline 'toy'/],
      [{ prompt: 'x', enable_hr: true }, /not supported by this server: enable_hr/],
      [{ prompt: 'x', width: 33 }, /width 33 is not a positive multiple of 8/],
      [{ prompt: 'x', batch_size: 8, n_iter: 4 }, /32 exceeds the limit of 16/],
      [{ prompt: '' }, /prompt is empty/],
    ] as const) {
      const r = await call(base, '/sdapi/v1/txt2img', body);
      t.is(r.status, 422, JSON.stringify(body));
      t.regex(r.json.detail, pattern);
    }

    for (const [body, pattern] of [
      [{}, /must have required property 'prompt'/],
      [{ prompt: 'x', response_format: 'url' }, /b64_json only/],
      [{ prompt: 'x', size: 'huge' }, /size 'huge' must be WIDTHxHEIGHT/],
      [{ prompt: 'x', n: 99 }, /n must be <= 16/],
    ] as const) {
      const r = await call(base, '/v1/images/generations', body);
      t.is(r.status, 400, JSON.stringify(body));
      t.is(r.json.error.type, 'invalid_request_error');
      t.regex(r.json.error.message, pattern);
    }

    const oneEncoder = await call(base, '/v1/compare', { prompt: 'x', encoders: ['clip'] });
    t.is(oneEncoder.status, 400);
    t.regex(oneEncoder.json.error.message, /encoders must NOT have fewer than 2 items/);
    const typo = await call(base, '/v1/compare', { prompt: 'x', encoders: ['clip', 'safe-clip'], stepz: 3 });
    t.regex(typo.json.error.message, /must NOT have additional properties/);

    const badJson = await call(base, '/v1/images/generations', '{"prompt": ');
    t.is(badJson.status, 400);
    t.truthy(badJson.json.error.message);
    t.is((await call(base, '/sdapi/v1/nothing')).json.detail, 'no route GET /sdapi/v1/nothing');
    t.is((await call(base, '/v1/nothing')).json.error.type, 'not_found_error');
  });
});

test('bodies over 1 MiB get 413; a full queue 429, in the API style', async (t) => {
  await withServer({ maxQueue: 0 }, async ({ base }) => {
    const big = await call(base, '/v1/images/generations', { prompt: 'x'.repeat(2 << 20) });
    t.is(big.status, 413);
    t.truthy(big.json.error.message);
    const full = await call(base, '/sdapi/v1/txt2img', { prompt: 'x' });
    t.is(full.status, 429);
    t.regex(full.json.detail, /queue is full/);
  });
});

test('the bearer token of --token guards the HTTP APIs; the page and /health load without it', async (t) => {
  await withServer({ token: 's3cret' }, async ({ base }) => {
    const missing = await call(base, '/v1/models');
    t.is(missing.status, 401);
    t.is(missing.json.error.type, 'authentication_error');
    const wrong = await call(base, '/sdapi/v1/sd-models', undefined, { authorization: 'Bearer nope' });
    t.is(wrong.status, 401);
    t.is(wrong.json.detail, 'invalid bearer token');
    t.is((await call(base, '/v1/models', undefined, { authorization: 'Bearer s3cret' })).status, 200);
    const page = await fetch(`${base}/`);
    t.is(page.status, 200);
    t.regex(await page.text(), /<form id="form">/);
    t.is((await fetch(`${base}/page/app.js`)).status, 200);
    t.is((await call(base, '/health')).status, 200);
  });
});

test('no CORS headers unless --cors names the origin', async (t) => {
  const origin = 'https://studio.example';
  await withServer({}, async ({ base }) => {
    const res = await fetch(`${base}/v1/models`, { headers: { origin } });
    t.is(res.headers.get('access-control-allow-origin'), null);
  });
  await withServer({ cors: origin }, async ({ base }) => {
    const res = await fetch(`${base}/v1/models`, { headers: { origin } });
    t.is(res.headers.get('access-control-allow-origin'), origin);
    const preflight = await fetch(`${base}/v1/compare`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    t.true(preflight.status < 300);
  });
});

test('compare streams queue position, progress and the images as Server-Sent Events', async (t) => {
  await withServer({}, async ({ base }) => {
    const res = await fetch(`${base}/v1/compare`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        prompt: 'a cat',
        encoders: ['clip', 'safe-clip'],
        seed: '18446744073709551615',
        steps: 3,
      }),
    });
    t.is(res.headers.get('content-type'), 'text/event-stream');
    const blocks = (await res.text())
      .trim()
      .split('\n\n')
      .map((block) => block.split('\n'));
    t.deepEqual(
      blocks.map(([event]) => event!.slice('event: '.length)),
      ['queued', 'progress', 'progress', 'progress', 'result'],
    );
    const result = JSON.parse(blocks.at(-1)![1]!.slice('data: '.length));
    t.is(result.seed, '18446744073709551615');
    t.deepEqual(
      result.columns.map((c: { encoder: string }) => c.encoder),
      ['clip', 'safe-clip'],
    );
  });
});

test('a client that goes away mid-generation cancels its request', async (t) => {
  await withServer({ stepMs: 20 }, async ({ server, base, counters }) => {
    const abort = new AbortController();
    const res = await fetch(`${base}/v1/compare`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a cat', encoders: ['clip', 'safe-clip'], steps: 200 }),
      signal: abort.signal,
    });
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('event: progress')) text += new TextDecoder().decode((await reader.read()).value);
    abort.abort();
    const deadline = Date.now() + 10_000;
    while (server.queue.active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    t.is(server.queue.active, 0);
    const steps = Atomics.load(counters, STEPS_EXECUTED);
    t.true(steps < 2 * 200, `the batch stopped early: ${steps} job-steps of 400`);

    // The same for a plain JSON request: A1111's txt2img, dropped while it runs.
    const dropped = new AbortController();
    const txt2img = fetch(`${base}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a cat', steps: 200 }),
      signal: dropped.signal,
    }).catch(() => 'aborted');
    while ((await call(base, '/sdapi/v1/progress')).json.progress === 0) await new Promise((r) => setTimeout(r, 20));
    dropped.abort();
    t.is(await txt2img, 'aborted');
    while (server.queue.active > 0 && Date.now() < deadline + 10_000) await new Promise((r) => setTimeout(r, 20));
    t.is(server.queue.active, 0);
    t.true(Atomics.load(counters, STEPS_EXECUTED) - steps < 200, 'the dropped txt2img stopped early');
  });
});

test("A1111's interrupt stops the running txt2img, which answers with no images", async (t) => {
  await withServer({ stepMs: 20 }, async ({ base }) => {
    const running = call(base, '/sdapi/v1/txt2img', { prompt: 'a cat', steps: 200 });
    let progress = 0;
    while (progress === 0) {
      await new Promise((r) => setTimeout(r, 20));
      progress = (await call(base, '/sdapi/v1/progress')).json.progress;
    }
    t.is((await call(base, '/sdapi/v1/interrupt', {})).status, 200);
    const done = await running;
    t.is(done.status, 200);
    t.deepEqual(done.json.images, []);
    t.true(JSON.parse(done.json.info).interrupted);
    t.true((await call(base, '/sdapi/v1/progress')).json.state.interrupted);
  });
});

test('on shutdown, running HTTP requests finish while new ones get 503', async (t) => {
  await withServer({ stepMs: 10 }, async ({ server, base }) => {
    const running = call(base, '/sdapi/v1/txt2img', { prompt: 'a cat', steps: 60 });
    while ((await call(base, '/sdapi/v1/progress')).json.progress === 0) await new Promise((r) => setTimeout(r, 10));
    t.deepEqual((await call(base, '/health')).json, { status: 'SERVING' });
    const stopped = server.shutdown(10_000);
    const late = await call(base, '/v1/images/generations', { prompt: 'a dog' });
    t.is(late.status, 503);
    t.is(late.json.error.message, 'server is shutting down');
    const health = await call(base, '/health');
    t.is(health.status, 503);
    t.deepEqual(health.json, { status: 'NOT_SERVING', reason: 'shutting down' });
    t.is((await running).status, 200);
    await stopped;
  });
});
