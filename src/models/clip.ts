import { GraphBuilder } from '../onnx/graph.js';
import type { Config } from '../core/config.js';
import { activation, attention, Conv2d, Embedding, LayerNorm, Linear } from './nn.js';
import { Scope } from './scope.js';
import type { WeightStore } from '../core/weights.js';

/**
 * CLIP text and vision towers (transformers' CLIPTextTransformer / CLIPVisionTransformer), each module owning its
 * children under the checkpoint's names. The towers are built from a Scope, so the same classes serve inference
 * graphs (weights as initializers) and any builder whose Scope hands out parameters another way.
 */

/** What one encoder stack needs from a text_config or vision_config. */
export interface ClipEncoderConfig {
  hiddenSize: number;
  layers: number;
  heads: number;
  intermediateSize: number;
  hiddenAct: string;
  layerNormEps: number;
}

export interface ClipTextConfig extends ClipEncoderConfig {
  vocabSize: number;
  maxPositions: number;
  eosTokenId: number;
}

export interface ClipVisionConfig extends ClipEncoderConfig {
  imageSize: number;
  patchSize: number;
  channels: number;
}

function readEncoderConfig(c: Config): ClipEncoderConfig {
  const cfg = {
    hiddenSize: c.int('hidden_size'),
    layers: c.int('num_hidden_layers'),
    heads: c.int('num_attention_heads'),
    intermediateSize: c.int('intermediate_size'),
    hiddenAct: c.str('hidden_act'),
    layerNormEps: c.num('layer_norm_eps'),
  };
  if (cfg.hiddenSize % cfg.heads !== 0) {
    throw new Error(`${c.file}: hidden_size ${cfg.hiddenSize} does not split into ${cfg.heads} attention heads`);
  }
  return cfg;
}

export function readClipTextConfig(c: Config): ClipTextConfig {
  return {
    ...readEncoderConfig(c),
    vocabSize: c.int('vocab_size'),
    maxPositions: c.int('max_position_embeddings'),
    eosTokenId: c.int('eos_token_id'),
  };
}

export function readClipVisionConfig(c: Config): ClipVisionConfig {
  const cfg = {
    ...readEncoderConfig(c),
    imageSize: c.int('image_size'),
    patchSize: c.int('patch_size'),
    channels: c.int('num_channels', 3),
  };
  if (cfg.imageSize % cfg.patchSize !== 0)
    throw new Error(`${c.file}: image_size ${cfg.imageSize} is not a multiple of patch_size ${cfg.patchSize}`);
  return cfg;
}

export class ClipAttention {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  constructor(
    readonly s: Scope,
    readonly cfg: ClipEncoderConfig,
  ) {
    const d = cfg.hiddenSize;
    this.q_proj = new Linear(s.child('q_proj'), d, d);
    this.k_proj = new Linear(s.child('k_proj'), d, d);
    this.v_proj = new Linear(s.child('v_proj'), d, d);
    this.out_proj = new Linear(s.child('out_proj'), d, d);
  }

  forward(x: string, mask?: string): string {
    const { heads, hiddenSize } = this.cfg;
    const q = this.q_proj.forward(x);
    const o = attention(this.s, q, this.k_proj.forward(x), this.v_proj.forward(x), heads, hiddenSize / heads, mask);
    return this.out_proj.forward(o);
  }
}

export class ClipMlp {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(
    readonly s: Scope,
    readonly cfg: ClipEncoderConfig,
  ) {
    this.fc1 = new Linear(s.child('fc1'), cfg.hiddenSize, cfg.intermediateSize);
    this.fc2 = new Linear(s.child('fc2'), cfg.intermediateSize, cfg.hiddenSize);
  }

  forward(x: string): string {
    return this.fc2.forward(activation(this.s, this.cfg.hiddenAct, this.fc1.forward(x)));
  }
}

/** Pre-norm residual block: x + attn(ln1(x)), then x + mlp(ln2(x)). */
export class ClipEncoderLayer {
  readonly self_attn: ClipAttention;
  readonly layer_norm1: LayerNorm;
  readonly mlp: ClipMlp;
  readonly layer_norm2: LayerNorm;
  constructor(
    readonly s: Scope,
    cfg: ClipEncoderConfig,
  ) {
    this.self_attn = new ClipAttention(s.child('self_attn'), cfg);
    this.layer_norm1 = new LayerNorm(s.child('layer_norm1'), cfg.hiddenSize, cfg.layerNormEps);
    this.mlp = new ClipMlp(s.child('mlp'), cfg);
    this.layer_norm2 = new LayerNorm(s.child('layer_norm2'), cfg.hiddenSize, cfg.layerNormEps);
  }

  forward(x: string, mask?: string): string {
    const g = this.s.g;
    const h = g.add(x, this.self_attn.forward(this.layer_norm1.forward(x), mask), this.s.path);
    return g.add(h, this.mlp.forward(this.layer_norm2.forward(h)), this.s.path);
  }
}

export class ClipEncoder {
  readonly layers: ClipEncoderLayer[];
  constructor(
    readonly s: Scope,
    cfg: ClipEncoderConfig,
  ) {
    const layers = s.child('layers');
    this.layers = Array.from({ length: cfg.layers }, (_, i) => new ClipEncoderLayer(layers.child(i), cfg));
  }

  /** Every hidden state, the input first: transformers' `hidden_states` tuple (clip skip picks from it). */
  forward(x: string, mask?: string): string[] {
    const states = [x];
    for (const layer of this.layers) states.push(layer.forward(states[states.length - 1], mask));
    return states;
  }
}

export class ClipTextEmbeddings {
  readonly token_embedding: Embedding;
  readonly position_embedding: Embedding;
  constructor(
    readonly s: Scope,
    cfg: ClipTextConfig,
  ) {
    this.token_embedding = new Embedding(s.child('token_embedding'), cfg.vocabSize, cfg.hiddenSize);
    this.position_embedding = new Embedding(s.child('position_embedding'), cfg.maxPositions, cfg.hiddenSize);
  }

  /** ids [B, S] -> [B, S, D]; positions are 0..S-1, the first S rows of the position table. */
  forward(ids: string, seqLen: string): string {
    const g = this.s.g;
    const name = this.s.path;
    const table = this.position_embedding.weight;
    const positions = g.op('Slice', [table, g.constI64([0]), seqLen, g.constI64([0])], {}, { name });
    return g.add(this.token_embedding.forward(ids), positions, name);
  }
}

/** The most negative float32, as transformers fills masked attention scores. */
const MASKED = -3.4028234663852886e38;

export interface ClipTextOutputs {
  lastHiddenState: string;
  pooled: string;
  /** hidden_states.0 (embeddings) .. hidden_states.L (last layer, before final_layer_norm). */
  hiddenStates: string[];
  /** The clip-skipped state through final_layer_norm, where forward() was given a clip skip. */
  conditioning?: string;
}

export class ClipTextTransformer {
  readonly embeddings: ClipTextEmbeddings;
  readonly encoder: ClipEncoder;
  readonly final_layer_norm: LayerNorm;
  constructor(
    readonly s: Scope,
    readonly cfg: ClipTextConfig,
  ) {
    this.embeddings = new ClipTextEmbeddings(s.child('embeddings'), cfg);
    this.encoder = new ClipEncoder(s.child('encoder'), cfg);
    this.final_layer_norm = new LayerNorm(s.child('final_layer_norm'), cfg.hiddenSize, cfg.layerNormEps);
  }

  /**
   * ids: int64 [B, S] with S <= max_position_embeddings. `clipSkip` (int64 scalar, 0..layers) adds `conditioning`,
   * what a diffusion UNet reads: with 0 or 1 the last layer's state, with 2 the penultimate's, and so on (A1111's
   * count; diffusers' clip_skip is one less), through final_layer_norm as stable-diffusion.cpp's
   * CLIPTextModel::forward(..., clip_skip) and diffusers' encode_prompt apply it.
   */
  forward(ids: string, clipSkip?: string): ClipTextOutputs {
    const g = this.s.g;
    const name = this.s.path;
    const seqLen = g.op('Slice', [g.op('Shape', [ids], {}, { name }), g.constI64([1]), g.constI64([2])], {}, { name });
    const hiddenStates = this.encoder.forward(this.embeddings.forward(ids, seqLen), this.causalMask(seqLen));
    const lastHiddenState = this.final_layer_norm.forward(hiddenStates[hiddenStates.length - 1]);
    const conditioning = clipSkip && this.final_layer_norm.forward(this.skipped(hiddenStates, clipSkip));
    return { lastHiddenState, pooled: this.pool(ids, lastHiddenState), hiddenStates, conditioning };
  }

  /** hidden_states[L + 1 - max(clipSkip, 1)], picked in the graph so that one session serves every clip skip. */
  private skipped(hiddenStates: string[], clipSkip: string): string {
    const g = this.s.g;
    const name = `${this.s.path}/clip_skip`;
    const stacked = g.op(
      'Concat',
      hiddenStates.map((h) => g.unsqueeze(h, [0], name)),
      { axis: 0 },
      { name },
    );
    const counted = g.op('Max', [clipSkip, g.constI64([1], [])], {}, { name });
    const index = g.op('Sub', [g.constI64([this.cfg.layers + 1], []), counted], {}, { name });
    return g.op('Gather', [stacked, index], { axis: 0 }, { name });
  }

  /**
   * last_hidden_state from token embeddings [B, S, D] given directly (transformers' `inputs_embeds`): the
   * adversarial attacks differentiate with respect to them, which a Gather from token ids would not allow.
   */
  forwardTokenEmbeds(tokenEmbeds: string): string {
    const g = this.s.g;
    const name = this.s.path;
    const seqLen = g.op(
      'Slice',
      [g.op('Shape', [tokenEmbeds], {}, { name }), g.constI64([1]), g.constI64([2])],
      {},
      { name },
    );
    const positions = g.op(
      'Slice',
      [this.embeddings.position_embedding.weight, g.constI64([0]), seqLen, g.constI64([0])],
      {},
      { name },
    );
    const hiddenStates = this.encoder.forward(g.add(tokenEmbeds, positions, name), this.causalMask(seqLen));
    return this.final_layer_norm.forward(hiddenStates[hiddenStates.length - 1]);
  }

  /** [S, S] scores mask: a token attends to itself and earlier tokens only. */
  private causalMask(seqLen: string): string {
    const g = this.s.g;
    const n = this.cfg.maxPositions;
    const full = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) full[i * n + j] = MASKED;
    const zero = g.constI64([0, 0]);
    const ends = g.op('Concat', [seqLen, seqLen], { axis: 0 }, { name: this.s.path });
    return g.op('Slice', [g.constF32(full, [n, n]), zero, ends, g.constI64([0, 1])], {}, { name: this.s.path });
  }

  /**
   * The hidden state at each sequence's end-of-text token. Configs from before transformers PR #24773 say
   * eos_token_id 2; there the end token is found as the largest id (49407 is the last of the vocabulary), as
   * transformers does; otherwise it is the first position holding eos_token_id. Picked by a Gather from the
   * flattened [B*S, D] states rather than GatherND, so that the fine-tuning module can differentiate this graph.
   */
  private pool(ids: string, hidden: string): string {
    const g = this.s.g;
    const name = `${this.s.path}/pool`;
    // Ids are below 2^24, so float32 holds them exactly; ArgMax returns the first maximum, as torch.argmax does.
    const key =
      this.cfg.eosTokenId === 2 ? ids : g.op('Equal', [ids, g.constI64([this.cfg.eosTokenId], [])], {}, { name });
    const position = g.op('ArgMax', [g.op('Cast', [key], { to: 1 }, { name })], { axis: -1, keepdims: 0 }, { name });
    const shape = g.op('Shape', [ids], {}, { name });
    const rows = g.op('Slice', [shape, g.constI64([0]), g.constI64([1])], {}, { name });
    const seq = g.op('Slice', [shape, g.constI64([1]), g.constI64([2])], {}, { name });
    const starts = g.mul(
      g.op('Range', [g.constI64([0], []), g.op('Squeeze', [rows], {}, { name }), g.constI64([1], [])], {}, { name }),
      seq,
      name,
    );
    const flat = g.reshape(hidden, [-1, this.cfg.hiddenSize], name);
    return g.op('Gather', [flat, g.reshape(g.add(starts, position, name), [-1], name)], { axis: 0 }, { name });
  }
}

export class ClipVisionEmbeddings {
  readonly class_embedding: string;
  readonly patch_embedding: Conv2d;
  readonly position_embedding: Embedding;
  constructor(
    readonly s: Scope,
    readonly cfg: ClipVisionConfig,
  ) {
    const d = cfg.hiddenSize;
    this.class_embedding = s.param('class_embedding', [d]);
    const patch = { stride: cfg.patchSize, bias: false };
    this.patch_embedding = new Conv2d(s.child('patch_embedding'), cfg.channels, d, cfg.patchSize, patch);
    const patches = (cfg.imageSize / cfg.patchSize) ** 2;
    this.position_embedding = new Embedding(s.child('position_embedding'), patches + 1, d);
  }

  /** pixels [B, C, H, W] -> [B, 1 + patches, D]: the class token, then the patches row by row. */
  forward(pixels: string): string {
    const g = this.s.g;
    const name = this.s.path;
    const d = this.cfg.hiddenSize;
    const patches = g.transpose(g.reshape(this.patch_embedding.forward(pixels), [0, d, -1], name), [0, 2, 1], name);
    const batch = g.op(
      'Slice',
      [g.op('Shape', [pixels], {}, { name }), g.constI64([0]), g.constI64([1])],
      {},
      { name },
    );
    const classShape = g.op('Concat', [batch, g.constI64([1, d])], { axis: 0 }, { name });
    const cls = g.op('Expand', [g.reshape(this.class_embedding, [1, 1, d], name), classShape], {}, { name });
    const tokens = g.op('Concat', [cls, patches], { axis: 1 }, { name });
    return g.add(tokens, this.position_embedding.weight, name);
  }
}

export interface ClipVisionOutputs {
  lastHiddenState: string;
  pooled: string;
  hiddenStates: string[];
}

export class ClipVisionTransformer {
  readonly embeddings: ClipVisionEmbeddings;
  readonly pre_layrnorm: LayerNorm;
  readonly encoder: ClipEncoder;
  readonly post_layernorm: LayerNorm;
  constructor(
    readonly s: Scope,
    readonly cfg: ClipVisionConfig,
  ) {
    this.embeddings = new ClipVisionEmbeddings(s.child('embeddings'), cfg);
    this.pre_layrnorm = new LayerNorm(s.child('pre_layrnorm'), cfg.hiddenSize, cfg.layerNormEps);
    this.encoder = new ClipEncoder(s.child('encoder'), cfg);
    this.post_layernorm = new LayerNorm(s.child('post_layernorm'), cfg.hiddenSize, cfg.layerNormEps);
  }

  /** last_hidden_state is the encoder's output as is; only the pooled class token is post-normed. */
  forward(pixels: string): ClipVisionOutputs {
    const g = this.s.g;
    const hiddenStates = this.encoder.forward(this.pre_layrnorm.forward(this.embeddings.forward(pixels)));
    const lastHiddenState = hiddenStates[hiddenStates.length - 1];
    const cls = g.op('Gather', [lastHiddenState, g.constI64([0], [])], { axis: 1 }, { name: this.s.path });
    return { lastHiddenState, pooled: this.post_layernorm.forward(cls), hiddenStates };
  }
}

/**
 * Where a tower sits in a checkpoint: under `text_model.` / `vision_model.` (CLIPModel, transformers 4 saves) or at
 * the root (transformers 5 single-tower saves); found by the tower's first weight.
 */
function towerPrefix(weights: WeightStore, tower: 'text_model' | 'vision_model', probe: string): string {
  if (weights.has(`${tower}.${probe}`)) return tower;
  if (weights.has(probe)) return '';
  throw new Error(
    `${weights.source}: no CLIP ${tower === 'text_model' ? 'text' : 'vision'} tower (neither ${tower}.${probe} ` +
      `nor ${probe})`,
  );
}

export const textTowerPrefix = (weights: WeightStore) =>
  towerPrefix(weights, 'text_model', 'embeddings.token_embedding.weight');
export const visionTowerPrefix = (weights: WeightStore) =>
  towerPrefix(weights, 'vision_model', 'embeddings.patch_embedding.weight');

function towerScope(root: Scope, prefix: string): Scope {
  return prefix ? root.child(prefix) : root;
}

/** Checkpoint keys that hold no parameter: the position_ids buffer older transformers saved. */
const BUFFERS = [/(^|\.)embeddings\.position_ids$/];

export interface ClipGraphOptions {
  /** Projection width when the checkpoint has text_projection / visual_projection; absent for none. */
  projectionDim?: number;
  /** Text graph: add the `clip_skip` input and the `conditioning` output (see ClipTextTransformer.forward). */
  clipSkip?: boolean;
}

/** Keys of the other tower and of CLIPModel's head, which a single-tower graph leaves alone. */
const NOT_TEXT = [/^vision_model\./, /^visual_projection\./, /^logit_scale$/];
const NOT_VISION = [/^text_model\./, /^text_projection\./, /^logit_scale$/];

/**
 * Text graph: `input_ids` int64 [batch, seq] -> `last_hidden_state`, `pooler_output`, `hidden_states.0..L`,
 * `text_embeds` when a projection width is given, and with `clipSkip`: `clip_skip` int64 [] -> `conditioning`.
 */
export function buildClipTextGraph(
  weights: WeightStore,
  cfg: ClipTextConfig,
  opts: ClipGraphOptions = {},
): GraphBuilder {
  const g = new GraphBuilder();
  const root = Scope.root(g, weights);
  const prefix = textTowerPrefix(weights);
  const tower = new ClipTextTransformer(towerScope(root, prefix), cfg);
  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const out = tower.forward(ids, opts.clipSkip ? g.input('clip_skip', 'int64', []) : undefined);
  const d = cfg.hiddenSize;
  g.output(out.lastHiddenState, 'last_hidden_state', 'float32', ['batch', 'seq', d]);
  if (out.conditioning) g.output(out.conditioning, 'conditioning', 'float32', ['batch', 'seq', d]);
  g.output(out.pooled, 'pooler_output', 'float32', ['batch', d]);
  out.hiddenStates.forEach((h, i) => {
    g.output(h, `hidden_states.${i}`, 'float32', ['batch', 'seq', d]);
  });
  if (opts.projectionDim !== undefined) {
    const projection = new Linear(root.child('text_projection'), d, opts.projectionDim, false);
    g.output(projection.forward(out.pooled), 'text_embeds', 'float32', ['batch', opts.projectionDim]);
  }
  const noProjection = opts.projectionDim === undefined ? [/^text_projection\./] : [];
  root.refuseUnused('CLIP text tower', [...BUFFERS, ...NOT_TEXT, ...noProjection]);
  return g;
}

/**
 * Vision graph: `pixel_values` [batch, C, image_size, image_size] -> `last_hidden_state`, `pooler_output`,
 * `image_embeds`.
 */
export function buildClipVisionGraph(
  weights: WeightStore,
  cfg: ClipVisionConfig,
  opts: ClipGraphOptions = {},
): GraphBuilder {
  const g = new GraphBuilder();
  const root = Scope.root(g, weights);
  const tower = new ClipVisionTransformer(towerScope(root, visionTowerPrefix(weights)), cfg);
  const pixels = g.input('pixel_values', 'float32', ['batch', cfg.channels, cfg.imageSize, cfg.imageSize]);
  const out = tower.forward(pixels);
  const d = cfg.hiddenSize;
  const tokens = (cfg.imageSize / cfg.patchSize) ** 2 + 1;
  g.output(out.lastHiddenState, 'last_hidden_state', 'float32', ['batch', tokens, d]);
  g.output(out.pooled, 'pooler_output', 'float32', ['batch', d]);
  if (opts.projectionDim !== undefined) {
    const projection = new Linear(root.child('visual_projection'), d, opts.projectionDim, false);
    g.output(projection.forward(out.pooled), 'image_embeds', 'float32', ['batch', opts.projectionDim]);
  }
  const noProjection = opts.projectionDim === undefined ? [/^visual_projection\./] : [];
  root.refuseUnused('CLIP vision tower', [...BUFFERS, ...NOT_VISION, ...noProjection]);
  return g;
}
