import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { observeRuns, type Provider, type SessionSettings } from '../onnx/session.js';
import { createEngine, type LocalEngine } from '../pipeline/engine.js';
import { startServer } from '../server/server.js';
import { createDiffusionClient, type DiffusionClient, type GenerateEventMsg } from '../grpc/proto.js';
import { encodePng, imagesToBytes } from '../core/png.js';
import { median, runChild, type BenchRow } from './measure.js';

const PROMPT = 'a red circle on a blue square';
// Each toy image takes a few hundred ms and a shared machine's load moves single samples by several per cent.
const OVERHEAD_SAMPLES = 9;
const BATCHING_ROUNDS = 3;

const spread = (xs: number[]) => `${Math.min(...xs).toFixed(3)}-${Math.max(...xs).toFixed(3)}`;

/** Section c on the toy model: one whole generate() (text encoder, denoising, VAE, PNG) over its session runs. */
export async function toyOverheadSection(manifest: string, session: SessionSettings): Promise<BenchRow[]> {
  const engine = (await createEngine({ manifest, session })) as LocalEngine;
  try {
    const request = engine.resolve({ prompt: PROMPT, seed: 7n });
    await engine.generate(request);
    const whole: number[] = [];
    const withoutPng: number[] = [];
    for (let i = 0; i < OVERHEAD_SAMPLES; i++) {
      let inRuns = 0;
      observeRuns((ms) => (inRuns += ms));
      const t = performance.now();
      const { images } = await engine.generate({ ...request, seed: BigInt(8 + i) });
      const wall = performance.now() - t;
      observeRuns(undefined);
      // The same PNG encoding again, timed alone, to tell the pipeline's own overhead from the image format's.
      const p = performance.now();
      imagesToBytes(images).map((rgb) => encodePng(rgb, request.width, request.height, { parameters: '{}' }));
      const pngMs = performance.now() - p;
      whole.push(wall / inRuns);
      withoutPng.push((wall - pngMs) / inRuns);
    }
    const what = `toy generate() ${request.width}x${request.height}, ${request.steps} steps`;
    return [
      {
        section: 'c pipeline overhead',
        name: `${what}: wall / sum(run)`,
        value: median(whole),
        unit: 'ratio',
        target: '<= 1.03',
        note: `median of ${OVERHEAD_SAMPLES} (${spread(whole)}); PNG encoding included`,
      },
      {
        section: 'c pipeline overhead',
        name: `${what}, less PNG encoding: wall / sum(run)`,
        value: median(withoutPng),
        unit: 'ratio',
        target: '<= 1.03',
        note: `median of ${OVERHEAD_SAMPLES} (${spread(withoutPng)})`,
      },
    ];
  } finally {
    await engine.close();
  }
}

function generateOnce(client: DiffusionClient, seed: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let images = 0;
    const stream = client.generate({ prompt: PROMPT, seed: String(seed) }, new grpc.Metadata());
    stream.on('data', (e: GenerateEventMsg) => {
      if ('result' in e && e.result) images += e.result.images.length;
    });
    stream.on('error', reject);
    stream.on('end', () => (images ? resolve(images) : reject(new Error('the server sent no image'))));
  });
}

/**
 * Section d: a real server (one worker, --max-batch 4) on a free loopback port; 4 sequential against 4 concurrent
 * requests.
 */
export async function batchingSection(manifest: string, session: SessionSettings): Promise<BenchRow[]> {
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    workers: 1,
    maxQueue: 16,
    maxBatch: 4,
    engineOptions: { manifest, session },
    metricsPort: 0,
    maxResponseBytes: 64 << 20,
    logger: pino({ level: 'silent' }),
  });
  const client = createDiffusionClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  try {
    await generateOnce(client, 1);
    const sequential: number[] = [];
    const concurrent: number[] = [];
    const ratios: number[] = [];
    for (let round = 0; round < BATCHING_ROUNDS; round++) {
      let t = performance.now();
      let n = 0;
      for (let i = 0; i < 4; i++) n += await generateOnce(client, 10 + i);
      sequential.push(n / ((performance.now() - t) / 1000));
      t = performance.now();
      n = (await Promise.all([0, 1, 2, 3].map((i) => generateOnce(client, 20 + i)))).reduce((a, b) => a + b, 0);
      concurrent.push(n / ((performance.now() - t) / 1000));
      ratios.push(concurrent[round] / sequential[round]);
    }
    const note = `median of ${BATCHING_ROUNDS} rounds`;
    return [
      {
        section: 'd batching',
        name: 'toy server, 4 sequential requests',
        value: median(sequential),
        unit: 'images/s',
        note,
      },
      {
        section: 'd batching',
        name: 'toy server, 4 concurrent requests (--max-batch 4)',
        value: median(concurrent),
        unit: 'images/s',
        note,
      },
      {
        section: 'd batching',
        name: 'concurrent / sequential',
        value: median(ratios),
        unit: 'ratio',
        target: '>= 1.3',
        note: `${note} (${spread(ratios)}), each round's own ratio`,
      },
    ];
  } finally {
    client.close();
    await server.shutdown(5000);
  }
}

/** Section f: first image after process start with an empty and with a filled graph cache; per image when warm. */
export async function firstImageSection(manifest: string, provider: Provider): Promise<BenchRow[]> {
  const cache = mkdtempSync(join(tmpdir(), 'safe-sd-cache-'));
  try {
    const env = { ...process.env, SAFE_SD_CACHE: cache };
    const cold = await runChild<{ firstImageMs: number }>('first-image.ts', [manifest, '0', provider], env);
    const warm = await runChild<{ firstImageMs: number; perImageMs: number }>(
      'first-image.ts',
      [manifest, '3', provider],
      env,
    );
    return [
      {
        section: 'f toy model',
        name: 'first image after start, empty graph cache',
        value: cold.firstImageMs / 1000,
        unit: 's',
        note: 'includes Node + tsx start',
      },
      {
        section: 'f toy model',
        name: 'first image after start, warm graph cache',
        value: warm.firstImageMs / 1000,
        unit: 's',
      },
      {
        section: 'f toy model',
        name: 'per image when warm',
        value: warm.perImageMs / 1000,
        unit: 's',
        note: 'median of 3',
      },
    ];
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
}
