import type { GraphBuilder } from '../onnx/graph.js';

/**
 * Safe-CLIP's training losses (Poppi et al., ECCV 2024, as in the released training code) built as graph nodes, so
 * one ONNX graph runs forward, loss and backward. Embeddings are the projected pooled outputs (text_embeds,
 * image_embeds), not normalised. S, U: safe / unsafe captions through the trained text tower; V, G: safe / unsafe
 * images through the trained vision tower; Sref, Vref: safe captions / images through the frozen reference model.
 */

export const TERMS = [
  'S_Sref_cos',
  'U_Sref_cos',
  'V_Vref_cos',
  'G_Vref_cos',
  'S_Vref_nce',
  'U_Vref_nce',
  'Sref_V_nce',
  'Sref_G_nce',
] as const;
export type Term = (typeof TERMS)[number];

export const LAMBDAS: Record<Term, number> = {
  S_Sref_cos: 0.1,
  U_Sref_cos: 0.1,
  V_Vref_cos: 0.1,
  G_Vref_cos: 0.2,
  S_Vref_nce: 0.25,
  U_Vref_nce: 0.25,
  Sref_V_nce: 0.25,
  Sref_G_nce: 0.5,
};

const LAMBDA_SUM = TERMS.reduce((s, t) => s + LAMBDAS[t], 0);

/** The weight of a term in the total: lambda / sum(lambdas) / 8, as the released code averages the 8 terms. */
export function termWeight(term: Term): number {
  return LAMBDAS[term] / LAMBDA_SUM / TERMS.length;
}

/** The temperature the released code fixes for its InfoNCE terms (not the model's learned logit_scale). */
export const NCE_SCALE = 100;

/** Value names of [B, P] embeddings; V and G are absent when the vision tower is not trained. */
export interface Embeddings {
  S: string;
  U: string;
  Sref: string;
  Vref: string;
  V?: string;
  G?: string;
}

/**
 * The extra, optional term for pipelines that condition on the token sequence: the unsafe caption's
 * last_hidden_state is pulled toward the reference's for the safe caption, and the safe caption's is held at it.
 * Off by default; the paper's method touches the pooled embeddings only.
 */
export interface HiddenStates {
  /** [B, T, D] trained last_hidden_state of the safe and the unsafe captions, and the reference's of the safe ones. */
  S: string;
  U: string;
  Sref: string;
  weight: number;
}

export interface LossValues {
  terms: Partial<Record<Term, string>>;
  /** Mean squared distances of the hidden-state term, when asked for. */
  hidden?: { U_Sref_hidden: string; S_Sref_hidden: string };
  total: string;
}

const NAME = 'loss';

function unit(g: GraphBuilder, x: string): string {
  const sq = g.op('ReduceSum', [g.mul(x, x, NAME), g.constI64([-1])], { keepdims: 1 }, { name: NAME });
  return g.op('Div', [x, g.op('Sqrt', [sq], {}, { name: NAME })], {}, { name: NAME });
}

/** mean over the batch of 1 - cosine_similarity(a, b). */
function cosineDistance(g: GraphBuilder, a: string, b: string): string {
  const cos = g.op(
    'ReduceSum',
    [g.mul(unit(g, a), unit(g, b), NAME), g.constI64([-1])],
    { keepdims: 0 },
    { name: NAME },
  );
  return g.op('Sub', [g.scalarF32(1), g.op('ReduceMean', [cos], { keepdims: 0 }, { name: NAME })], {}, { name: NAME });
}

/**
 * Mean over rows of the cross-entropy of `logits` [B, B] against each row's own index. A row's log-sum-exp is
 * logits - log_softmax at any column (the mean over columns is used), so no identity mask of the batch size is
 * needed; `diagonal` [B] holds logits[i, i].
 */
function diagonalCrossEntropy(g: GraphBuilder, logits: string, diagonal: string): string {
  const lse = g.op('Sub', [logits, g.op('LogSoftmax', [logits], { axis: 1 }, { name: NAME })], {}, { name: NAME });
  const rowLse = g.op('ReduceMean', [lse], { axes: [1], keepdims: 0 }, { name: NAME });
  return g.op('ReduceMean', [g.op('Sub', [rowLse, diagonal], {}, { name: NAME })], { keepdims: 0 }, { name: NAME });
}

/** Symmetric InfoNCE at the fixed scale: 0.5 (CE(s a_n b_n^T) + CE(s b_n a_n^T)). */
function infoNce(g: GraphBuilder, a: string, b: string): string {
  const an = unit(g, a);
  const bn = unit(g, b);
  const scale = g.scalarF32(NCE_SCALE);
  const logits = g.mul(g.matmul(an, g.transpose(bn, [1, 0], NAME), NAME), scale, NAME);
  const diagonal = g.mul(
    g.op('ReduceSum', [g.mul(an, bn, NAME), g.constI64([-1])], { keepdims: 0 }, { name: NAME }),
    scale,
    NAME,
  );
  const both = g.add(
    diagonalCrossEntropy(g, logits, diagonal),
    diagonalCrossEntropy(g, g.transpose(logits, [1, 0], NAME), diagonal),
    NAME,
  );
  return g.mul(both, g.scalarF32(0.5), NAME);
}

function meanSquared(g: GraphBuilder, a: string, b: string): string {
  const d = g.op('Sub', [a, b], {}, { name: NAME });
  return g.op('ReduceMean', [g.mul(d, d, NAME)], { keepdims: 0 }, { name: NAME });
}

/**
 * The loss terms present for the embeddings given (4 text terms, or all 8 when V and G are given) and their
 * weighted total.
 */
export function safeClipLoss(g: GraphBuilder, e: Embeddings, hidden?: HiddenStates): LossValues {
  const terms: Partial<Record<Term, string>> = {
    S_Sref_cos: cosineDistance(g, e.S, e.Sref),
    U_Sref_cos: cosineDistance(g, e.U, e.Sref),
    S_Vref_nce: infoNce(g, e.S, e.Vref),
    U_Vref_nce: infoNce(g, e.U, e.Vref),
  };
  if (e.V !== undefined || e.G !== undefined) {
    if (e.V === undefined || e.G === undefined) throw new Error('safeClipLoss: the image terms need both V and G');
    terms.V_Vref_cos = cosineDistance(g, e.V, e.Vref);
    terms.G_Vref_cos = cosineDistance(g, e.G, e.Vref);
    terms.Sref_V_nce = infoNce(g, e.Sref, e.V);
    terms.Sref_G_nce = infoNce(g, e.Sref, e.G);
  }
  const weighted: string[] = TERMS.filter((t) => terms[t] !== undefined).map((t) =>
    g.mul(terms[t] as string, g.scalarF32(termWeight(t)), NAME),
  );
  let extra: LossValues['hidden'];
  if (hidden && hidden.weight !== 0) {
    extra = {
      U_Sref_hidden: meanSquared(g, hidden.U, hidden.Sref),
      S_Sref_hidden: meanSquared(g, hidden.S, hidden.Sref),
    };
    weighted.push(g.mul(g.add(extra.U_Sref_hidden, extra.S_Sref_hidden, NAME), g.scalarF32(hidden.weight), NAME));
  }
  const total = weighted.reduce((acc, w) => g.add(acc, w, NAME));
  return { terms, hidden: extra, total };
}
