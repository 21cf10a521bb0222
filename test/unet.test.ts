import test from 'ava';
import { Config } from '../src/core/config.js';
import { SafetensorsFile } from '../src/core/safetensors.js';
import { f32, type F32Tensor, type Tensor } from '../src/core/tensor.js';
import { MemoryWeights, SafetensorsWeights, weightFiles } from '../src/core/weights.js';
import { buildUnetGraph, loadUnetGraph, parseUnetConfig } from '../src/models/unet.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';
import { fixture, weightsPath } from './fixtures.js';
import { maxAbsError } from './helpers/compare.js';

const TOY_UNET = weightsPath('toy-sd', 'unet');

const golden = SafetensorsFile.open(fixture('unet_golden.safetensors'));
const goldenF32 = (name: string) => golden.readF32(name);

/** The first `n` items of a batch. */
function head(t: F32Tensor, n: number): F32Tensor {
  const per = t.data.length / t.shape[0];
  return f32(t.data.slice(0, n * per), [n, ...t.shape.slice(1)]);
}

const timesteps = (...ts: number[]) => f32(Float32Array.from(ts), [ts.length]);

const session = createSession(serializeModel(loadUnetGraph(fixture('tiny-sd', 'unet'))));

/** Near 10x the largest error measured against diffusers (1.3e-6, the scalar timestep). */
const TOL = 2e-5;

/** Run the tiny-sd graph on `feeds` and compare `out_sample` with the golden tensor `key`. */
function goldenTest(title: string, key: string, feeds: () => Record<string, Tensor>) {
  test(title, async (t) => {
    const out = (await run(await session, feeds())).out_sample;
    const want = goldenF32(key);
    t.deepEqual(out.shape, want.shape);
    const err = maxAbsError(out, want);
    t.log(`${key} max abs error ${err.toExponential(2)}`);
    t.true(err < TOL);
  });
}

goldenTest('tiny-sd UNet matches diffusers on a batch of 3 with per-sample timesteps', 'out_sample', () => ({
  sample: goldenF32('sample'),
  timestep: timesteps(...[...(golden.read('timestep').data as BigInt64Array)].map(Number)),
  encoder_hidden_states: goldenF32('encoder_hidden_states'),
}));

goldenTest('a single timestep is broadcast over the batch (scalar timestep golden)', 'scalar_timestep_out', () => ({
  sample: head(goldenF32('sample'), 1),
  timestep: timesteps(261),
  encoder_hidden_states: head(goldenF32('encoder_hidden_states'), 1),
}));

goldenTest('a 16x12 latent (sides not multiples of 8) up-samples to the skip sizes', 'out_16x12', () => ({
  sample: goldenF32('sample_16x12'),
  timestep: timesteps(640),
  encoder_hidden_states: head(goldenF32('encoder_hidden_states'), 1),
}));

test('the fp16 toy UNet loads and maps 8x8 latents to 8x8 noise predictions', async (t) => {
  const s = await createSession(serializeModel(loadUnetGraph(TOY_UNET)));
  const n = 2 * 4 * 8 * 8;
  const sample = f32(
    Float32Array.from({ length: n }, (_, i) => Math.sin(i)),
    [2, 4, 8, 8],
  );
  const context = f32(
    Float32Array.from({ length: 2 * 77 * 64 }, (_, i) => Math.cos(i * 0.37)),
    [2, 77, 64],
  );
  const out = await run(s, { sample, timestep: timesteps(500), encoder_hidden_states: context });
  t.deepEqual(out.out_sample.shape, [2, 4, 8, 8]);
  t.true(out.out_sample.data.every(Number.isFinite));
});

function tinyConfig(patch: Record<string, unknown>): Config {
  const base = Config.read(fixture('tiny-sd', 'unet', 'config.json'));
  return new Config(base.file, { ...base.raw, ...patch });
}

for (const [key, value] of [
  ['addition_embed_type', 'text_time'],
  ['class_embed_type', 'timestep'],
  [
    'down_block_types',
    ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'SimpleCrossAttnDownBlock2D'],
  ],
] as const) {
  test(`refuses config key ${key}=${JSON.stringify(value)} by name`, (t) => {
    const err = t.throws(() => buildUnetGraph(tinyConfig({ [key]: value }), new MemoryWeights(new Map())));
    t.regex(err!.message, new RegExp(`config\\.json: config key '${key}'`));
  });
}

test('a config that does not describe the checkpoint names the weight', (t) => {
  const weights = SafetensorsWeights.open(weightFiles(fixture('tiny-sd', 'unet'), 'diffusion_pytorch_model'));
  try {
    const err = t.throws(() => buildUnetGraph(tinyConfig({ block_out_channels: [32, 32, 64, 128] }), weights));
    t.regex(
      err!.message,
      /weight down_blocks\.3\.resnets\.0\.conv1\.weight has shape \[64,64,3,3\] but the config implies \[128,64,3,3\]/,
    );
  } finally {
    weights.close();
  }
});

test('use_linear_projection (SD 2.x): Linear proj_in/proj_out give the same numbers as 1x1 convs', async (t) => {
  // A 1x1 conv is a Linear on channels, so the tiny-sd weights with proj_* reshaped to [out, in] must give the golden.
  const file = SafetensorsFile.open(weightFiles(fixture('tiny-sd', 'unet'), 'diffusion_pytorch_model')[0]);
  const map = new Map<string, F32Tensor>();
  try {
    for (const k of file.names) {
      const w = file.readF32(k);
      map.set(k, /\.proj_(in|out)\.weight$/.test(k) ? f32(w.data, w.shape.slice(0, 2)) : w);
    }
  } finally {
    file.close();
  }
  const g = buildUnetGraph(tinyConfig({ use_linear_projection: true }), new MemoryWeights(map));
  const out = (
    await run(await createSession(serializeModel(g)), {
      sample: goldenF32('sample'),
      timestep: timesteps(999, 500, 1),
      encoder_hidden_states: goldenF32('encoder_hidden_states'),
    })
  ).out_sample;
  const err = maxAbsError(out, goldenF32('out_sample'));
  t.log(`linear-projection out_sample max abs error ${err.toExponential(2)}`);
  t.true(err < TOL);
});

test('num_attention_heads, when given, is the head count and attention_head_dim is ignored', (t) => {
  const cfg = parseUnetConfig(tinyConfig({ num_attention_heads: [2, 4, 4, 8], attention_head_dim: 64 }));
  t.deepEqual(cfg.heads, [2, 4, 4, 8]);
  t.deepEqual(parseUnetConfig(tinyConfig({})).heads, [8, 8, 8, 8]);
  t.true(parseUnetConfig(tinyConfig({ upcast_attention: true })).upcastAttention);
});
