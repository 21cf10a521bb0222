import { existsSync, statSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Config } from '../core/config.js';
import { RenamedWeights, type WeightSource } from './renamed-weights.js';
import { parseUnetConfig, SD15_UNET_CONFIG, type UnetConfig } from './unet.js';
import { readVaeConfig } from './vae.js';
import { SafetensorsWeights } from '../core/weights.js';
import { InputError } from '../core/errors.js';

/**
 * Stable Diffusion 1.x / 2.x single-file checkpoints (the original LDM layout that A1111 and civitai distribute:
 * `model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`), seen as the diffusers / transformers
 * components our graphs read. Nothing is copied: each component is a renaming view of the one safetensors file.
 *
 * The LDM → diffusers renaming is structural (as in diffusers' single_file_utils): UNet `input_blocks.k` count
 * through the down blocks' resnets (+ attentions) and downsamplers in order, `output_blocks.k` through the up
 * blocks' resnets (+ attentions) and upsamplers; the VAE's `down.i` / `up.i` are the encoder's blocks in order and
 * the decoder's in reverse. The prefixes are derived from the component configs, and each LDM module kind renames
 * its own children (ResBlock's `in_layers.0` is ResnetBlock2D's `norm1`, ...).
 */

export type SingleFileFamily = 'sd1' | 'sd2';

const CONFIGS = (name: string) => fileURLToPath(new URL(`./configs/${name}`, import.meta.url));
/** The full CLIP BPE vocabulary that SD 1.x and 2.x share (the toy model ships it). */
export const DEFAULT_TOKENIZER_DIR = fileURLToPath(new URL('../../weights/toy-sd/tokenizer', import.meta.url));

const DEFAULTS: Record<
  SingleFileFamily,
  { unet: string; textEncoder: string; scheduler: string; tokenizerConfig?: string }
> = {
  sd1: {
    unet: SD15_UNET_CONFIG,
    textEncoder: CONFIGS('sd15-text-encoder.json'),
    scheduler: CONFIGS('sd15-scheduler.json'),
  },
  // SD 2.x pads prompts with '!' (id 0), not with the end token.
  sd2: {
    unet: CONFIGS('sd2-unet.json'),
    textEncoder: CONFIGS('sd2-text-encoder.json'),
    scheduler: CONFIGS('sd2-scheduler.json'),
    tokenizerConfig: CONFIGS('sd2-tokenizer-config.json'),
  },
};
const DEFAULT_VAE = CONFIGS('sd-vae.json');

export const UNET_PREFIX = 'model.diffusion_model.';
export const VAE_PREFIX = 'first_stage_model.';
/** SD 1.x: transformers' CLIPTextModel (with or without its `text_model.` level). */
export const CLIP_TEXT_PREFIX = 'cond_stage_model.transformer.';
/** SD 2.x: OpenCLIP's text transformer. */
export const OPENCLIP_TEXT_PREFIX = 'cond_stage_model.model.';

const PICKLE_EXTENSIONS = ['.ckpt', '.pt', '.pth', '.bin', '.pkl'];

/** Refuse pickle checkpoints by extension, before anything reads them. */
export function refusePickle(path: string): void {
  const ext = extname(path).toLowerCase();
  if (PICKLE_EXTENSIONS.includes(ext)) {
    throw new InputError(
      `${path}: ${ext} checkpoints are Python pickles, which are never loaded here (unpickling runs arbitrary code). ` +
        `Convert it to safetensors first, on a machine you trust, e.g. with diffusers: ` +
        `StableDiffusionPipeline.from_single_file('${path}').save_pretrained('out/') ` +
        `or torch.load + safetensors.torch.save_file(state_dict['state_dict'], 'model.safetensors')`,
    );
  }
}

export interface SingleFileCheckpoint {
  file: string;
  family: SingleFileFamily;
  /** The diffusers-style folder the configs came from, or undefined for the built-in SD 1.x / 2.x defaults. */
  configDir?: string;
  unetConfig: Config;
  vaeConfig: Config;
  textConfig: Config;
  scheduler: Config;
  /** Tokenizer folder, and the tokenizer_config.json that sets its pad token and length. */
  tokenizer: { dir: string; configFile: string };
  textEncoderKind: 'clip' | 'openclip';
}

/** A built-in default config with the keys the checkpoint's tensor shapes decide filled in from them. */
function withSizes(file: string, sizes: Record<string, unknown>): Config {
  const base = Config.read(file);
  return new Config(base.file, { ...base.raw, ...sizes });
}

function shapeOf(w: SafetensorsWeights, key: string): number[] {
  const s = w.shape(key);
  if (!s) throw new InputError(`${w.source}: missing tensor ${key}; not a Stable Diffusion 1.x / 2.x checkpoint`);
  return s;
}

function resblockCount(keys: string[]): number {
  const re = new RegExp(`^${OPENCLIP_TEXT_PREFIX.replace(/\./g, '\\.')}transformer\\.resblocks\\.(\\d+)\\.`);
  let n = 0;
  for (const k of keys) {
    const m = re.exec(k);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

function clipLayerCount(keys: string[]): number {
  let n = 0;
  for (const k of keys) {
    const m = /\.encoder\.layers\.(\d+)\./.exec(k);
    if (m && k.startsWith(CLIP_TEXT_PREFIX)) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

/**
 * Read a single-file checkpoint's header and pick its configs: from `configDir` (a diffusers-style folder with
 * unet/, vae/, text_encoder/ configs, optionally scheduler/ and tokenizer/; as A1111 reads a .yaml beside a
 * non-standard checkpoint), or else the SD 1.5 / SD 2.x defaults, chosen by the text encoder (CLIP or OpenCLIP) and
 * the UNet's cross-attention width, with the sizes the tensors show filled in.
 */
export function readSingleFile(path: string, configDir?: string): SingleFileCheckpoint {
  const file = resolve(path);
  refusePickle(file);
  if (!existsSync(file) || !statSync(file).isFile()) throw new InputError(`${file}: no such checkpoint file`);
  const w = SafetensorsWeights.open([file]);
  try {
    const keys = w.keys();
    const textEncoderKind = keys.some((k) => k.startsWith(OPENCLIP_TEXT_PREFIX))
      ? 'openclip'
      : keys.some((k) => k.startsWith(CLIP_TEXT_PREFIX))
        ? 'clip'
        : undefined;
    if (
      !keys.some((k) => k.startsWith(UNET_PREFIX)) ||
      !keys.some((k) => k.startsWith(VAE_PREFIX)) ||
      !textEncoderKind
    ) {
      const sdxl = keys.some((k) => k.startsWith('conditioner.embedders.'));
      throw new InputError(
        sdxl
          ? `${file}: an SDXL checkpoint (conditioner.embedders.*); only SD 1.x / 2.x single files are supported`
          : `${file}: not a Stable Diffusion single-file checkpoint (needs ${UNET_PREFIX}*, ${VAE_PREFIX}* and ` +
              `${CLIP_TEXT_PREFIX}* or ${OPENCLIP_TEXT_PREFIX}* tensors)`,
      );
    }
    const family: SingleFileFamily = textEncoderKind === 'openclip' ? 'sd2' : 'sd1';
    const defaults = DEFAULTS[family];
    const tokenizer = {
      dir: DEFAULT_TOKENIZER_DIR,
      configFile: defaults.tokenizerConfig ?? join(DEFAULT_TOKENIZER_DIR, 'tokenizer_config.json'),
    };

    if (configDir) {
      const dir = resolve(configDir);
      const optional = (sub: string, name: string, fallback: string) =>
        existsSync(join(dir, sub, name)) ? join(dir, sub, name) : fallback;
      const tokDir = existsSync(join(dir, 'tokenizer')) ? join(dir, 'tokenizer') : undefined;
      return {
        file,
        family,
        configDir: dir,
        textEncoderKind,
        unetConfig: Config.read(join(dir, 'unet', 'config.json')),
        vaeConfig: Config.read(join(dir, 'vae', 'config.json')),
        textConfig: Config.read(join(dir, 'text_encoder', 'config.json')),
        scheduler: Config.read(optional('scheduler', 'scheduler_config.json', defaults.scheduler)),
        tokenizer: tokDir ? { dir: tokDir, configFile: join(tokDir, 'tokenizer_config.json') } : tokenizer,
      };
    }

    const crossKey = keys.find((k) => k.startsWith(UNET_PREFIX) && k.endsWith('.attn2.to_k.weight'));
    const cross = crossKey ? shapeOf(w, crossKey)[1] : undefined;
    const expected = family === 'sd2' ? 1024 : 768;
    if (cross !== expected) {
      throw new InputError(
        `${file}: its ${textEncoderKind === 'openclip' ? 'OpenCLIP' : 'CLIP'} text encoder goes with SD ` +
          `${family === 'sd2' ? '2.x' : '1.x'}, whose UNet attends to width ${expected}, but this UNet's is ` +
          `${cross}; give the folder of its configs (diffusers layout: unet/, vae/, text_encoder/)`,
      );
    }
    const projIn = keys.find((k) => k.startsWith(UNET_PREFIX) && k.endsWith('.proj_in.weight'));
    const textSizes =
      textEncoderKind === 'openclip'
        ? (() => {
            const [vocab, hidden] = shapeOf(w, `${OPENCLIP_TEXT_PREFIX}token_embedding.weight`);
            // SD 2.x conditions on the penultimate layer: the view stops there (see openClipTextWeights).
            return {
              vocab_size: vocab,
              hidden_size: hidden,
              num_attention_heads: hidden / 64,
              intermediate_size: shapeOf(w, `${OPENCLIP_TEXT_PREFIX}transformer.resblocks.0.mlp.c_fc.weight`)[0],
              max_position_embeddings: shapeOf(w, `${OPENCLIP_TEXT_PREFIX}positional_embedding`)[0],
              num_hidden_layers: resblockCount(keys) - 1,
            };
          })()
        : { num_hidden_layers: clipLayerCount(keys) };
    return {
      file,
      family,
      textEncoderKind,
      unetConfig: withSizes(defaults.unet, {
        in_channels: shapeOf(w, `${UNET_PREFIX}input_blocks.0.0.weight`)[1],
        out_channels: shapeOf(w, `${UNET_PREFIX}out.2.weight`)[0],
        use_linear_projection: projIn ? shapeOf(w, projIn).length === 2 : family === 'sd2',
      }),
      vaeConfig: Config.read(DEFAULT_VAE),
      textConfig: withSizes(defaults.textEncoder, textSizes),
      scheduler: Config.read(defaults.scheduler),
      tokenizer,
    };
  } finally {
    w.close();
  }
}

type Inner = Record<string, string>;
/** LDM ResBlock children → diffusers ResnetBlock2D's. */
const UNET_RESNET: Inner = {
  'in_layers.0': 'norm1',
  'in_layers.2': 'conv1',
  'emb_layers.1': 'time_emb_proj',
  'out_layers.0': 'norm2',
  'out_layers.3': 'conv2',
  skip_connection: 'conv_shortcut',
};
/** LDM VAE ResnetBlock children → diffusers': only the shortcut differs. */
const VAE_RESNET: Inner = { nin_shortcut: 'conv_shortcut' };
/** LDM AttnBlock (1×1 convolutions) → diffusers Attention (the VAE graph accepts 1×1-conv shaped projections). */
const VAE_ATTENTION: Inner = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' };

/** One module's move: LDM path → diffusers path, and how its children are renamed (same names when absent). */
type Rule = [ldm: string, diffusers: string, inner?: Inner];

function renameChild(tail: string, inner: Inner | undefined): string {
  if (inner) {
    for (const [from, to] of Object.entries(inner))
      if (tail.startsWith(`${from}.`)) return to + tail.slice(from.length);
  }
  return tail;
}

/** Rename every key under `prefix` that a rule covers; the rest stay in the view under their own names. */
function renamedView(weights: SafetensorsWeights, prefix: string, rules: Rule[]): RenamedWeights {
  const byLdm = new Map(rules.map((r) => [r[0], r]));
  const renamed = new Map<string, WeightSource>();
  const own = weights.keys().filter((k) => k.startsWith(prefix));
  for (const key of own) {
    const rest = key.slice(prefix.length);
    // The longest module path that has a rule: `input_blocks.3.0.op` before `input_blocks.3.0`.
    const parts = rest.split('.');
    for (let n = parts.length - 1; n > 0; n--) {
      const rule = byLdm.get(parts.slice(0, n).join('.'));
      if (!rule) continue;
      renamed.set(`${rule[1]}.${renameChild(parts.slice(n).join('.'), rule[2])}`, { key });
      break;
    }
  }
  return new RenamedWeights(weights, renamed, own);
}

/** The UNet's module moves, walked from its block structure. */
export function unetRules(cfg: UnetConfig): Rule[] {
  const rules: Rule[] = [
    ['time_embed.0', 'time_embedding.linear_1'],
    ['time_embed.2', 'time_embedding.linear_2'],
    ['input_blocks.0.0', 'conv_in'],
    ['out.0', 'conv_norm_out'],
    ['out.2', 'conv_out'],
    ['middle_block.0', 'mid_block.resnets.0', UNET_RESNET],
    ['middle_block.1', 'mid_block.attentions.0'],
    ['middle_block.2', 'mid_block.resnets.1', UNET_RESNET],
  ];
  const n = cfg.blockOutChannels.length;
  let k = 1;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < cfg.layersPerBlock[i]; j++, k++) {
      rules.push([`input_blocks.${k}.0`, `down_blocks.${i}.resnets.${j}`, UNET_RESNET]);
      if (cfg.downBlockTypes[i] === 'CrossAttnDownBlock2D')
        rules.push([`input_blocks.${k}.1`, `down_blocks.${i}.attentions.${j}`]);
    }
    if (i < n - 1) rules.push([`input_blocks.${k++}.0.op`, `down_blocks.${i}.downsamplers.0.conv`]);
  }
  const upLayers = [...cfg.layersPerBlock].reverse();
  k = 0;
  for (let i = 0; i < n; i++) {
    const layers = upLayers[i] + 1;
    for (let j = 0; j < layers; j++, k++) {
      rules.push([`output_blocks.${k}.0`, `up_blocks.${i}.resnets.${j}`, UNET_RESNET]);
      const attn = cfg.upBlockTypes[i] === 'CrossAttnUpBlock2D';
      if (attn) rules.push([`output_blocks.${k}.1`, `up_blocks.${i}.attentions.${j}`]);
      if (j === layers - 1 && i < n - 1)
        rules.push([`output_blocks.${k}.${attn ? 2 : 1}.conv`, `up_blocks.${i}.upsamplers.0.conv`]);
    }
  }
  return rules;
}

/** The VAE's module moves: encoder blocks in order, decoder blocks reversed (LDM's `up.0` is the last to run). */
export function vaeRules(blocks: number, layersPerBlock: number): Rule[] {
  const rules: Rule[] = [];
  for (const part of ['encoder', 'decoder']) {
    rules.push(
      [`${part}.conv_in`, `${part}.conv_in`],
      [`${part}.conv_out`, `${part}.conv_out`],
      [`${part}.norm_out`, `${part}.conv_norm_out`],
    );
    rules.push(
      [`${part}.mid.block_1`, `${part}.mid_block.resnets.0`, VAE_RESNET],
      [`${part}.mid.block_2`, `${part}.mid_block.resnets.1`, VAE_RESNET],
    );
    rules.push([`${part}.mid.attn_1`, `${part}.mid_block.attentions.0`, VAE_ATTENTION]);
  }
  for (let i = 0; i < blocks; i++) {
    for (let j = 0; j < layersPerBlock; j++)
      rules.push([`encoder.down.${i}.block.${j}`, `encoder.down_blocks.${i}.resnets.${j}`, VAE_RESNET]);
    if (i < blocks - 1)
      rules.push([`encoder.down.${i}.downsample.conv`, `encoder.down_blocks.${i}.downsamplers.0.conv`]);
    const up = blocks - 1 - i;
    for (let j = 0; j < layersPerBlock + 1; j++)
      rules.push([`decoder.up.${i}.block.${j}`, `decoder.up_blocks.${up}.resnets.${j}`, VAE_RESNET]);
    if (i > 0) rules.push([`decoder.up.${i}.upsample.conv`, `decoder.up_blocks.${up}.upsamplers.0.conv`]);
  }
  rules.push(['quant_conv', 'quant_conv'], ['post_quant_conv', 'post_quant_conv']);
  return rules;
}

/** OpenCLIP resblock children → transformers CLIPEncoderLayer's (the fused in_proj is split separately). */
const OPENCLIP_LAYER: Inner = {
  ln_1: 'layer_norm1',
  ln_2: 'layer_norm2',
  'attn.out_proj': 'self_attn.out_proj',
  'mlp.c_fc': 'mlp.fc1',
  'mlp.c_proj': 'mlp.fc2',
};

/**
 * OpenCLIP's text transformer as a transformers CLIPTextModel with `layers` layers. Resblocks from `layers` on are
 * left out: SD 2.x conditions on the penultimate layer's output through ln_final, which is exactly a CLIPTextModel
 * one layer shorter (diffusers' conversion does the same). `text_projection` and `logit_scale` are not part of
 * CLIPTextModel and are left out too.
 */
function openClipTextWeights(weights: SafetensorsWeights, layers: number, hidden: number): RenamedWeights {
  const p = OPENCLIP_TEXT_PREFIX;
  const rules: Rule[] = [
    ['token_embedding', 'text_model.embeddings.token_embedding'],
    ['ln_final', 'text_model.final_layer_norm'],
  ];
  for (let n = 0; n < layers; n++)
    rules.push([`transformer.resblocks.${n}`, `text_model.encoder.layers.${n}`, OPENCLIP_LAYER]);
  const view = renamedView(weights, p, rules);
  const renamed = new Map(view.renamed);
  renamed.set('text_model.embeddings.position_embedding.weight', { key: `${p}positional_embedding` });
  for (let n = 0; n < layers; n++) {
    const from = `${p}transformer.resblocks.${n}.attn`;
    const to = `text_model.encoder.layers.${n}.self_attn`;
    for (const [field, dest] of [
      ['in_proj_weight', 'weight'],
      ['in_proj_bias', 'bias'],
    ]) {
      renamed.delete(`text_model.encoder.layers.${n}.attn.${field}`);
      ['q_proj', 'k_proj', 'v_proj'].forEach((proj, i) => {
        renamed.set(`${to}.${proj}.${dest}`, { key: `${from}.${field}`, rows: [i * hidden, (i + 1) * hidden] });
      });
    }
  }
  const dropped = (k: string) => {
    const m = /^transformer\.resblocks\.(\d+)\./.exec(k.slice(p.length));
    return (m && Number(m[1]) >= layers) || /^(text_projection|logit_scale|attn_mask|visual\.)/.test(k.slice(p.length));
  };
  return new RenamedWeights(
    weights,
    renamed,
    weights.keys().filter((k) => k.startsWith(p) && !dropped(k)),
  );
}

/** The UNet's weights under diffusers names. Close the result after building. */
export function singleFileUnetWeights(ckpt: SingleFileCheckpoint): RenamedWeights {
  return renamedView(SafetensorsWeights.open([ckpt.file]), UNET_PREFIX, unetRules(parseUnetConfig(ckpt.unetConfig)));
}

/** The VAE's weights under diffusers names. Close the result after building. */
export function singleFileVaeWeights(ckpt: SingleFileCheckpoint): RenamedWeights {
  const cfg = readVaeConfig(ckpt.vaeConfig);
  return renamedView(
    SafetensorsWeights.open([ckpt.file]),
    VAE_PREFIX,
    vaeRules(cfg.blockOutChannels.length, cfg.layersPerBlock),
  );
}

/** The text encoder's weights under transformers CLIPTextModel names. Close the result after building. */
export function singleFileTextWeights(ckpt: SingleFileCheckpoint): RenamedWeights {
  const weights = SafetensorsWeights.open([ckpt.file]);
  if (ckpt.textEncoderKind === 'openclip')
    return openClipTextWeights(weights, ckpt.textConfig.int('num_hidden_layers'), ckpt.textConfig.int('hidden_size'));
  const renamed = new Map<string, WeightSource>();
  const own = weights.keys().filter((k) => k.startsWith(CLIP_TEXT_PREFIX));
  for (const k of own) renamed.set(k.slice(CLIP_TEXT_PREFIX.length), { key: k });
  return new RenamedWeights(weights, renamed, own);
}
