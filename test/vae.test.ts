import test from 'ava';
import { fixture, weightsPath } from './fixtures.js';
import { maxAbsError } from './helpers/compare.js';
import { buildVaeDecoderGraph, buildVaeEncoderGraph, loadVae, readVaeConfig } from '../src/models/vae.js';
import { Config } from '../src/core/config.js';
import { MemoryWeights } from '../src/core/weights.js';
import { readSafetensors } from '../src/core/safetensors.js';
import { serializeModel } from '../src/onnx/serialize.js';
import { createSession, run } from '../src/onnx/session.js';
import { f32, toF32, type F32Tensor } from '../src/core/tensor.js';

const TINY_VAE = fixture('tiny-sd', 'vae');
const TOY_VAE = weightsPath('toy-sd', 'vae');
const golden = readSafetensors(fixture('vae_golden.safetensors'));
const gold = (k: string) => toF32(golden.get(k)!, k);
// Near 10x the largest errors measured against diffusers: 1.2e-6 (latent_mean), 6.3e-6 (decoded).
const ENCODER_TOL = 2e-5;
const DECODER_TOL = 7e-5;

test('encoder matches diffusers: image -> latent_mean, latent_std', async (t) => {
  const { config, weights } = loadVae(TINY_VAE);
  const session = await createSession(serializeModel(buildVaeEncoderGraph(config, weights)));
  weights.close();
  const out = await run(session, { image: gold('image') });
  const errMean = maxAbsError(out.latent_mean, gold('latent_mean'));
  const errStd = maxAbsError(out.latent_std, gold('latent_std'));
  t.log(`max abs error: latent_mean ${errMean.toExponential(2)}, latent_std ${errStd.toExponential(2)}`);
  t.true(errMean < ENCODER_TOL);
  t.true(errStd < ENCODER_TOL);
});

test('decoder matches diffusers: UNet-space latents -> decode(latents / scaling_factor)', async (t) => {
  const { config, weights } = loadVae(TINY_VAE);
  const session = await createSession(serializeModel(buildVaeDecoderGraph(config, weights)));
  weights.close();
  const { image } = await run(session, { latents: gold('latents') });
  const err = maxAbsError(image, gold('decoded'));
  t.log(`max abs error: decoded ${err.toExponential(2)}`);
  t.true(err < DECODER_TOL);
});

test('decoder output size for a latent that is not square', async (t) => {
  const { config, weights } = loadVae(TINY_VAE);
  const session = await createSession(serializeModel(buildVaeDecoderGraph(config, weights)));
  weights.close();
  const { image } = await run(session, { latents: f32(new Float32Array(4 * 6 * 5).fill(0.1), [1, 4, 6, 5]) });
  t.deepEqual(image.shape, [1, 3, 48, 40]);
});

test('old mid-block attention layouts (query/key/value/proj_attn, 1x1 convs) give the same graph', async (t) => {
  const { config, weights } = loadVae(TINY_VAE);
  const renamed = new Map<string, F32Tensor>();
  const old = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' } as Record<string, string>;
  for (const k of weights.keys()) {
    const w = weights.get(k);
    const m = /^(.*\.attentions\.0\.)(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(k);
    if (!m) {
      renamed.set(k, w);
      continue;
    }
    const conv = m[3] === 'weight' ? f32(w.data, [...w.shape, 1, 1]) : w;
    renamed.set(`${m[1]}${old[m[2]]}.${m[3]}`, conv);
  }
  weights.close();
  const session = await createSession(
    serializeModel(buildVaeDecoderGraph(config, new MemoryWeights(renamed, 'old-layout.safetensors'))),
  );
  const { image } = await run(session, { latents: gold('latents') });
  const err = maxAbsError(image, gold('decoded'));
  t.log(`max abs error: decoded ${err.toExponential(2)}`);
  t.true(err < DECODER_TOL);
});

test('a checkpoint with a weight the model does not read is refused, naming it', (t) => {
  const { config, weights } = loadVae(TINY_VAE);
  const extra = new Map(weights.keys().map((k) => [k, weights.get(k)]));
  weights.close();
  extra.set('decoder.mid_block.resnets.0.time_emb_proj.weight', f32(new Float32Array(1), [1]));
  t.throws(() => buildVaeDecoderGraph(config, new MemoryWeights(extra, 'x.safetensors')), {
    message:
      'x.safetensors: 1 weight(s) not used by the VAE decoder its config describes: ' +
      'decoder.mid_block.resnets.0.time_emb_proj.weight',
  });
});

test('an unsupported block type is refused naming the file and key', (t) => {
  const raw = {
    ...Config.read(`${TINY_VAE}/config.json`).raw,
    up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'AttnUpDecoderBlock2D', 'UpDecoderBlock2D'],
  };
  t.throws(() => readVaeConfig(new Config('vae/config.json', raw)), {
    message: /^vae\/config\.json: up_block_types is .*AttnUpDecoderBlock2D/,
  });
});

test('toy-world VAE (fp16 weights) loads and runs with the expected shapes', async (t) => {
  const { config, weights } = loadVae(TOY_VAE);
  const enc = await createSession(serializeModel(buildVaeEncoderGraph(config, weights)));
  const dec = await createSession(serializeModel(buildVaeDecoderGraph(config, weights)));
  weights.close();
  const image = f32(
    Float32Array.from({ length: 3 * 64 * 64 }, (_, i) => Math.sin(i * 0.01)),
    [1, 3, 64, 64],
  );
  const { latent_mean, latent_std } = await run(enc, { image });
  t.deepEqual(latent_mean.shape, [1, 4, 8, 8]);
  t.deepEqual(latent_std.shape, [1, 4, 8, 8]);
  t.true(latent_std.data.every((v) => v > 0 && Number.isFinite(v)));
  const latents = f32(
    latent_mean.data.map((v) => v * config.scalingFactor),
    [1, 4, 8, 8],
  );
  const { image: decoded } = await run(dec, { latents });
  t.deepEqual(decoded.shape, [1, 3, 64, 64]);
  t.true(decoded.data.every(Number.isFinite));
});
