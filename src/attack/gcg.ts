import { candidate, score, type Candidate, type SearchProblem, type SearchResult } from './search.js';

/**
 * Greedy coordinate gradient over K adversarial tokens (Zou et al. 2023, as MMA-Diffusion's text attack uses it):
 * the gradient of the objective with respect to each position's one-hot token ranks the `topK` most promising
 * substitutions per position; a batch of single-token substitutions drawn from them is scored exactly, and the
 * best becomes the next prompt. The best prompt seen is kept.
 */
export const GCG_DEFAULTS = { topK: 128 } as const;

export async function gcg(p: SearchProblem, topK: number = GCG_DEFAULTS.topK): Promise<SearchResult> {
  const { tower, vocab, target, rng } = p;
  const K = p.start.length;
  let current = candidate(vocab, p.start, target);
  if (!current) throw new Error('gcg: the starting tokens do not form a prompt of allowed tokens');
  let best = { cand: current, similarity: (await score(tower, target, [current], 1))[0] };
  let scored = 1;
  const positions = Array.from({ length: K }, (_, k) => k + 1);
  const allowed = vocab.ids;
  const pool = Math.min(topK, allowed.length);
  for (let step = 0; step < p.budget; step++) {
    const { grad } = await tower.tokenGradient(current.ids, target, positions);
    const V = tower.vocabSize;
    const top = positions.map((_, k) =>
      topTokens(grad.subarray(k * V, (k + 1) * V), allowed, pool, current!.tokens[k]),
    );
    const cands: Candidate[] = [];
    for (let tries = 0; cands.length < p.batch && tries < p.batch * 4; tries++) {
      // Positions in turn, as GCG spreads a batch evenly over them; the substitute drawn among the top-k.
      const k = (step + cands.length + tries) % K;
      const tokens = current.tokens.slice();
      tokens[k] = top[k][Math.floor(rng.next() * top[k].length)];
      const c = candidate(vocab, tokens, target);
      if (c) cands.push(c);
    }
    if (!cands.length) break;
    const sims = await score(tower, target, cands, p.batch);
    scored += cands.length;
    let i = 0;
    for (let j = 1; j < sims.length; j++) if (sims[j] > sims[i]) i = j;
    current = cands[i];
    if (sims[i] > best.similarity) best = { cand: cands[i], similarity: sims[i] };
    p.onStep?.(step + 1, best.similarity);
  }
  return { prompt: best.cand.text, tokens: best.cand.tokens, similarity: best.similarity, scored };
}

/** The `n` allowed tokens with the largest gradient, the current token left out (a size-n min-heap over one pass). */
function topTokens(grad: Float32Array, allowed: Int32Array, n: number, current: number): number[] {
  const heap: number[] = [];
  const less = (a: number, b: number) => grad[a] < grad[b] || (grad[a] === grad[b] && a > b);
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && less(heap[l], heap[m])) m = l;
      if (r < heap.length && less(heap[r], heap[m])) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  for (const t of allowed) {
    if (t === current) continue;
    if (heap.length < n) {
      heap.push(t);
      for (let i = heap.length - 1; i > 0 && less(heap[i], heap[(i - 1) >> 1]); i = (i - 1) >> 1)
        [heap[i], heap[(i - 1) >> 1]] = [heap[(i - 1) >> 1], heap[i]];
    } else if (less(heap[0], t)) {
      heap[0] = t;
      down(0);
    }
  }
  return heap.sort((a, b) => (less(a, b) ? 1 : -1));
}
