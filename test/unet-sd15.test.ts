import test from 'ava';
import * as ort from 'onnxruntime-node';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomPool } from '../src/bench/sd15.js';
import { Config } from '../src/core/config.js';
import { Scope } from '../src/models/scope.js';
import { MemoryWeights } from '../src/core/weights.js';
import { f32, numel } from '../src/core/tensor.js';
import { defineUnetGraph, parseUnetConfig, SD15_UNET_CONFIG } from '../src/models/unet.js';
import { GraphBuilder } from '../src/onnx/graph.js';
import { saveModel } from '../src/onnx/serialize.js';
import { run } from '../src/onnx/session.js';

/** SD 1.5's UNet has this many parameters (diffusers `sum(p.numel() for p in unet.parameters())`). */
const SD15_PARAMETERS = 859_520_964;

test('SD 1.5 architecture: the module tree has SD 1.5 parameter count, saves as external data and runs', async (t) => {
  const started = Date.now();
  const lap = (what: string) => t.log(`${what}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const dir = mkdtempSync(join(tmpdir(), 'unet-sd15-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // Every weight is made up in the shape the module tree asks for, so the key set and shapes come from the tree
  // alone. Weights are views at seeded offsets into one random pool: 3.4 GB of model in 128 MB of memory.
  const asked = new Map<string, number[]>();
  const pool = randomPool(32 << 20, 1234);
  let g: GraphBuilder | undefined = new GraphBuilder();
  const root = Scope.root(g, new MemoryWeights(new Map()), '', {
    fabricate: (key, shape) => {
      const n = numel(shape);
      const offset = (asked.size * 7_919_011) % (pool.length - n);
      asked.set(key, shape);
      return f32(pool.subarray(offset, offset + n), shape);
    },
  });
  defineUnetGraph(root, parseUnetConfig(Config.read(SD15_UNET_CONFIG)));
  let total = 0;
  for (const shape of asked.values()) total += numel(shape);
  t.is(total, SD15_PARAMETERS);
  t.is(asked.size, 686);
  t.deepEqual(asked.get('up_blocks.0.resnets.0.conv1.weight'), [1280, 2560, 3, 3]);
  t.deepEqual(asked.get('down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight'), [640, 768]);
  lap('graph built');

  const path = join(dir, 'unet.onnx');
  const { files } = saveModel(g, path, { externalData: true });
  g = undefined;
  t.true(statSync(files[1]).size > 3.4e9);
  lap('saved');

  // Without graph optimisations the session opens in about a second instead of 40 (ORT's NCHWc re-layout of 3.4 GB
  // of conv weights dominates 'all'); this test is about the architecture, not speed.
  const session = await ort.InferenceSession.create(path, {
    graphOptimizationLevel: 'disabled',
    executionProviders: ['cpu'],
  });
  lap('session created');
  const sample = f32(
    Float32Array.from({ length: 4 * 8 * 8 }, (_, i) => Math.sin(i)),
    [1, 4, 8, 8],
  );
  const context = f32(
    Float32Array.from({ length: 77 * 768 }, (_, i) => Math.cos(i * 0.01)),
    [1, 77, 768],
  );
  const out = await run(session, { sample, timestep: f32(Float32Array.of(500), [1]), encoder_hidden_states: context });
  lap('ran');
  t.deepEqual(out.out_sample.shape, [1, 4, 8, 8]);
  t.true(out.out_sample.data.every(Number.isFinite));
});
