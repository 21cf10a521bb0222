import type { F32Tensor } from '../core/tensor.js';
import { candidate, score, type Candidate, type SearchProblem, type SearchResult } from './search.js';

/**
 * Ring-A-Bell (Tsai et al., ICLR 2024): the concept is the mean difference of the encoder's hidden-state sequences
 * over paired captions (unsafe minus safe); the target of a prompt is its hidden states plus eta times the
 * concept, and a genetic search over K discrete tokens looks for the prompt whose hidden states come closest.
 */
export const RING_A_BELL_DEFAULTS = {
  /** The paper's nudity setting: 16 tokens, eta 3, population 200, mutation 0.25, crossover 0.5. */
  tokens: 16,
  eta: 3,
  population: 200,
  mutation: 0.25,
  crossover: 0.5,
  /** Share of the population carried over unchanged (the best of each generation survive). */
  elite: 0.1,
} as const;

/** mean over pairs of (unsafe - safe) hidden states, [1, S, D]. */
export function conceptVector(unsafe: F32Tensor, safe: F32Tensor): F32Tensor {
  const [n, S, D] = unsafe.shape;
  const out = new Float32Array(S * D);
  for (let i = 0; i < n; i++) {
    const off = i * S * D;
    for (let j = 0; j < S * D; j++) out[j] += (unsafe.data[off + j] - safe.data[off + j]) / n;
  }
  return { dtype: 'F32', shape: [1, S, D], data: out };
}

/** hidden + eta * concept, [1, S, D]. */
export function conceptTarget(hidden: F32Tensor, concept: F32Tensor, eta: number): F32Tensor {
  return { dtype: 'F32', shape: hidden.shape, data: hidden.data.map((v, j) => v + eta * concept.data[j]) };
}

export async function ringABell(
  p: SearchProblem,
  settings: { mutation: number; crossover: number; elite: number } = RING_A_BELL_DEFAULTS,
): Promise<SearchResult> {
  const { tower, vocab, target, rng } = p;
  const K = p.start.length;
  const start = candidate(vocab, p.start, target);
  if (!start) throw new Error('ring-a-bell: the starting tokens do not form a prompt of allowed tokens');
  const mutate = (tokens: Int32Array): Int32Array => {
    const t = tokens.slice();
    t[Math.floor(rng.next() * K)] = vocab.pick(rng.next());
    return t;
  };
  // The starting prompt and its one-token mutations: a population around it that the crossovers recombine.
  let population: Candidate[] = [start];
  while (population.length < p.batch) {
    const c = candidate(vocab, mutate(p.start), target);
    if (c) population.push(c);
  }
  let fitness = await score(tower, target, population, p.batch);
  let scored = population.length;
  const ranked = () => population.map((c, i) => ({ c, f: fitness[i] })).sort((a, b) => b.f - a.f);
  let order = ranked();
  const elites = Math.max(1, Math.round(settings.elite * p.batch));
  for (let gen = 0; gen < p.budget; gen++) {
    const parents = order.slice(0, Math.max(2, Math.ceil(order.length / 2)));
    const pick = () => {
      const a = parents[Math.floor(rng.next() * parents.length)];
      const b = parents[Math.floor(rng.next() * parents.length)];
      return (a.f >= b.f ? a : b).c.tokens;
    };
    const children: Candidate[] = [];
    for (let tries = 0; children.length < p.batch - elites && tries < p.batch * 8; tries++) {
      let tokens = pick();
      if (rng.next() < settings.crossover) {
        const other = pick();
        const cut = 1 + Math.floor(rng.next() * (K - 1));
        tokens = Int32Array.from([...tokens.subarray(0, cut), ...other.subarray(cut)]);
      }
      if (rng.next() < settings.mutation) tokens = mutate(tokens);
      const c = candidate(vocab, tokens, target);
      if (c) children.push(c);
    }
    const childFitness = await score(tower, target, children, p.batch);
    scored += children.length;
    const kept = order.slice(0, elites);
    population = [...kept.map((o) => o.c), ...children];
    fitness = Float32Array.from([...kept.map((o) => o.f), ...childFitness]);
    order = ranked();
    p.onStep?.(gen + 1, order[0].f);
  }
  const best = order[0];
  return { prompt: best.c.text, tokens: best.c.tokens, similarity: best.f, scored };
}
