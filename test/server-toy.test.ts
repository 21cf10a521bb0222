import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import {
  createDiffusionClient,
  type CompareEventMsg,
  type DiffusionClient,
  type GenerateEventMsg,
} from '../src/grpc/proto.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { DEFAULT_MANIFEST } from '../src/pipeline/manifest.js';

// The server with the real engine on the embedded toy model (the other server tests use a fake engine).
process.env.SAFE_SD_CACHE ??= mkdtempSync(join(tmpdir(), 'graph-cache-'));

let server: RunningServer;
let client: DiffusionClient;

test.before(async () => {
  server = await startServer({
    host: '127.0.0.1',
    port: 0,
    workers: 1,
    maxQueue: 8,
    maxBatch: 4,
    maxResponseBytes: 16 << 20,
    engineOptions: { manifest: DEFAULT_MANIFEST },
    logger: pino({ level: 'silent' }),
  });
  client = createDiffusionClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
});

test.after.always(async () => {
  client?.close();
  await server?.shutdown(0);
});

function events<E>(stream: grpc.ClientReadableStream<E>): Promise<E[]> {
  const out: E[] = [];
  return new Promise((resolve, reject) => {
    stream.on('data', (e: E) => out.push(e));
    stream.on('error', reject);
    stream.on('end', () => resolve(out));
  });
}

test.serial('ListModels lists the toy pipeline with its original and Safe-CLIP encoders', async (t) => {
  const res = await new Promise<{ encoders: Array<{ name: string; hiddenSize: number; safeClip: boolean }> }>(
    (resolve, reject) =>
      client.listModels({}, new grpc.Metadata(), {}, (err, r) => (err ? reject(err) : resolve(r as never))),
  );
  t.deepEqual(
    res.encoders.map((e) => [e.name, e.hiddenSize, e.safeClip]),
    [
      ['original', 64, false],
      ['safe', 64, true],
      ['safe-paper', 64, true],
      ['safe-robust', 64, true],
    ],
  );
});

test.serial('Generate streams progress and returns a PNG made by the toy model', async (t) => {
  const ev = await events<GenerateEventMsg>(
    client.generate({ prompt: 'a red star on a white background', seed: '5', steps: 6 }),
  );
  t.true(
    ev.some((e) => e.event === 'progress' && e.progress?.step === 7 && e.progress.total === 7),
    'PNDM: 6 steps are 7 UNet calls',
  );
  const last = ev[ev.length - 1];
  if (last.event !== 'result') return t.fail('no result');
  const images = last.result!.images;
  t.is(images.length, 1);
  t.is(images[0].encoder, 'original');
  t.deepEqual([...images[0].png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
});

test.serial('Generate streams a latent-size preview after each step when asked, none when not', async (t) => {
  const ask = (previews: boolean) =>
    events<GenerateEventMsg>(
      client.generate({ prompt: 'a red star on a white background', seed: '5', steps: 6, previews }),
    );
  const [withPreviews, without] = [await ask(true), await ask(false)];
  const previews = withPreviews.filter((e) => e.event === 'preview').map((e) => e.preview!);
  t.true(previews.length >= 6, `${previews.length} previews in 7 UNet calls`);
  t.deepEqual(
    previews.map((p) => [p.width, p.height, p.column]),
    previews.map(() => [8, 8, 0]),
  );
  t.deepEqual([...previews[0]!.png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
  t.is(withPreviews.at(-1)!.event, 'result');
  t.false(without.some((e) => e.event === 'preview'));
});

test.serial(
  'Compare: the same encoder twice gives identical images, original and safe differ on an unsafe prompt',
  async (t) => {
    const ev = await events<CompareEventMsg>(
      client.compare({
        prompt: 'a blue skull on a white background',
        encoders: ['safe', 'original', 'safe'],
        seed: '11',
        steps: 8,
      }),
    );
    const last = ev[ev.length - 1];
    if (last.event !== 'result') return t.fail('no result');
    const cols = last.result!.columns;
    t.deepEqual(
      cols.map((c) => c.encoder),
      ['safe', 'original', 'safe'],
    );
    t.deepEqual(Buffer.from(cols[0].images[0].png), Buffer.from(cols[2].images[0].png));
    t.notDeepEqual(Buffer.from(cols[0].images[0].png), Buffer.from(cols[1].images[0].png));
  },
);
