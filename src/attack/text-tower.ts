import type * as ort from 'onnxruntime-node';
import { buildGradients } from '../autodiff/autodiff.js';
import { loadClip } from '../models/clip-loader.js';
import { ClipTextTransformer, textTowerPrefix, type ClipTextConfig } from '../models/clip.js';
import { Scope } from '../models/scope.js';
import type { F32Tensor } from '../core/tensor.js';
import type { WeightStore } from '../core/weights.js';
import { GraphBuilder } from '../onnx/graph.js';
import { serializeModel } from '../onnx/serialize.js';
import { createSession, run, type SessionSettings } from '../onnx/session.js';

/**
 * A CLIP text tower as the attacks use it: token ids in, the last_hidden_state the UNet would see out, the cosine
 * similarity of that whole sequence (flattened) to a target sequence, and for GCG the gradient of that similarity
 * with respect to one-hot tokens. Token embeddings are looked up here, outside the graph, so the graph can take
 * them as an input and be differentiated with respect to them.
 */

/**
 * One thread per session: the tower is small, a search runs batch after batch, and on a shared machine extra
 * threads only wait on each other (a batch of 16 prompts took 20x longer than 16 single-prompt runs with ORT's
 * default).
 */
const SETTINGS: SessionSettings = { intraOpThreads: 1 };

const IN = { embeds: 'token_embeds', target: 'target_hidden' } as const;
const OUT = { hidden: 'last_hidden_state', similarity: 'similarity', grad: 'grad:one_hot' } as const;

/** Ids of `rows` prompts, each `seqLen` long, row-major. */
export interface IdBatch {
  ids: Int32Array;
  rows: number;
  seqLen: number;
}

/** cosine(flatten(h), flatten(t)) per row of [B, S, D] values. */
function sequenceCosine(g: GraphBuilder, h: string, t: string): string {
  const name = 'objective';
  const flat = (x: string) => g.op('Flatten', [x], { axis: 1 }, { name });
  const dot = (a: string, b: string) =>
    g.op('ReduceSum', [g.mul(a, b, name), g.constI64([1])], { keepdims: 0 }, { name });
  const hf = flat(h);
  const tf = flat(t);
  const norms = g.op('Sqrt', [g.mul(dot(hf, hf), dot(tf, tf), name)], {}, { name });
  return g.op('Div', [dot(hf, tf), norms], {}, { name });
}

function towerGraph(
  weights: WeightStore,
  cfg: ClipTextConfig,
  withGradient: boolean,
): { g: GraphBuilder; tokenTable: F32Tensor } {
  const g = new GraphBuilder();
  const prefix = textTowerPrefix(weights);
  const root = Scope.root(g, weights);
  const tower = new ClipTextTransformer(prefix ? root.child(prefix) : root, cfg);
  const table = tower.embeddings.token_embedding.weight;
  const tokenTable = g.initializers.get(table) as F32Tensor;
  // Lookups happen in JS; only the gradient graph needs the table, to turn embedding gradients into one-hot ones.
  if (!withGradient) g.initializers.delete(table);
  const embeds = g.input(IN.embeds, 'float32', ['batch', 'seq', cfg.hiddenSize]);
  const target = g.input(IN.target, 'float32', ['batch', 'seq', cfg.hiddenSize]);
  const hidden = tower.forwardTokenEmbeds(embeds);
  g.output(hidden, OUT.hidden, 'float32', ['batch', 'seq', cfg.hiddenSize]);
  const similarity = sequenceCosine(g, hidden, target);
  g.output(similarity, OUT.similarity, 'float32', ['batch']);
  if (withGradient) {
    const total = g.op('ReduceSum', [similarity], { keepdims: 0 }, { name: 'objective' });
    const grad = buildGradients(g, total, [embeds]).get(embeds)!;
    // d sim / d onehot[p, v] = <d sim / d embed[p], E[v]>: one [S, D] x [D, V] product, for the first row.
    const flat = g.reshape(grad, [-1, cfg.hiddenSize], 'one_hot');
    const oneHot = g.matmul(flat, g.transpose(table, [1, 0], 'one_hot'), 'one_hot');
    g.output(oneHot, OUT.grad, 'float32', ['positions', cfg.vocabSize]);
  }
  return { g, tokenTable };
}

export class AttackTower {
  private constructor(
    readonly dir: string,
    readonly cfg: ClipTextConfig,
    /** [vocab, D] token embeddings, float32. */
    readonly tokenTable: Float32Array,
    private readonly forward: ort.InferenceSession,
    private readonly backward: ort.InferenceSession | undefined,
  ) {}

  /** A CLIP folder's text tower; `withGradient`: also the forward + backward session GCG needs. */
  static async load(dir: string, withGradient: boolean): Promise<AttackTower> {
    const clip = loadClip(dir);
    try {
      if (!clip.textConfig) throw new Error(`${dir}: a ${clip.kind} has no text tower to attack`);
      return await AttackTower.fromWeights(dir, clip.weights, clip.textConfig, withGradient);
    } finally {
      clip.weights.close();
    }
  }

  /** A text tower from weights in memory (adversarial training attacks the encoder it is training). */
  static async fromWeights(
    label: string,
    weights: WeightStore,
    cfg: ClipTextConfig,
    withGradient: boolean,
  ): Promise<AttackTower> {
    const fwd = towerGraph(weights, cfg, false);
    const forward = await createSession(serializeModel(fwd.g), SETTINGS);
    const backward = withGradient
      ? await createSession(serializeModel(towerGraph(weights, cfg, true).g), SETTINGS)
      : undefined;
    return new AttackTower(label, cfg, fwd.tokenTable.data, forward, backward);
  }

  get hiddenSize(): number {
    return this.cfg.hiddenSize;
  }

  get vocabSize(): number {
    return this.cfg.vocabSize;
  }

  /** The token embeddings of a batch of ids, [rows, S, D]: what the graph takes. */
  embeds(b: IdBatch): F32Tensor {
    const d = this.hiddenSize;
    const out = new Float32Array(b.rows * b.seqLen * d);
    for (let i = 0; i < b.ids.length; i++) out.set(this.tokenTable.subarray(b.ids[i] * d, (b.ids[i] + 1) * d), i * d);
    return { dtype: 'F32', shape: [b.rows, b.seqLen, d], data: out };
  }

  /** A target repeated for every row of a batch: [1, S, D] -> [rows, S, D]. */
  private repeat(target: F32Tensor, rows: number): F32Tensor {
    if (target.shape[0] === rows) return target;
    const data = new Float32Array(rows * target.data.length);
    for (let r = 0; r < rows; r++) data.set(target.data, r * target.data.length);
    return { dtype: 'F32', shape: [rows, target.shape[1], target.shape[2]], data };
  }

  /** last_hidden_state [rows, S, D]. */
  async hidden(b: IdBatch): Promise<F32Tensor> {
    const zeros: F32Tensor = {
      dtype: 'F32',
      shape: [b.rows, b.seqLen, this.hiddenSize],
      data: new Float32Array(b.rows * b.seqLen * this.hiddenSize),
    };
    const out = await run(this.forward, { [IN.embeds]: this.embeds(b), [IN.target]: zeros }, [OUT.hidden]);
    return out[OUT.hidden];
  }

  /** Cosine similarity of each row's last_hidden_state to `target` ([1, S, D], or one per row). */
  async similarity(b: IdBatch, target: F32Tensor): Promise<Float32Array> {
    return this.similarityOfEmbeds(this.embeds(b), target);
  }

  /** The same from token embeddings [rows, S, D] (any point between tokens, as the gradient sees them). */
  async similarityOfEmbeds(embeds: F32Tensor, target: F32Tensor): Promise<Float32Array> {
    const out = await run(this.forward, { [IN.embeds]: embeds, [IN.target]: this.repeat(target, embeds.shape[0]) }, [
      OUT.similarity,
    ]);
    return out[OUT.similarity].data;
  }

  /**
   * The similarity of one prompt and its gradient with respect to the one-hot token at each position in
   * `positions`: d sim / d onehot[p, v] = <d sim / d embed[p], E[v]>, [positions.length, vocab].
   */
  async tokenGradient(
    ids: Int32Array,
    target: F32Tensor,
    positions: number[],
  ): Promise<{ similarity: number; grad: Float32Array }> {
    if (!this.backward) throw new Error(`${this.dir}: the tower was loaded without its gradient session`);
    const b: IdBatch = { ids, rows: 1, seqLen: ids.length };
    const out = await run(this.backward, { [IN.embeds]: this.embeds(b), [IN.target]: target }, [
      OUT.similarity,
      OUT.grad,
    ]);
    const all = out[OUT.grad].data;
    const V = this.vocabSize;
    const grad = new Float32Array(positions.length * V);
    positions.forEach((p, k) => {
      grad.set(all.subarray(p * V, (p + 1) * V), k * V);
    });
    return { similarity: out[OUT.similarity].data[0], grad };
  }

  async close(): Promise<void> {
    await this.forward.release();
    await this.backward?.release();
  }
}
