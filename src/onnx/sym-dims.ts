/**
 * Symbolic tensor sizes as integer polynomials over the graph's named dims ('batch', 'seq'), kept in one canonical
 * string form so that equal sizes compare equal as strings: `2*batch`, `batch*seq + 3`. Shape inference needs this
 * arithmetic because the graphs compute sizes at run time (a concatenated batch is 2*batch, a flattened one
 * batch*seq) and the gradient builder can only skip a broadcast reduction when it can prove two sizes equal.
 */

/** monomial (sorted symbols joined by '*', '' for the constant) -> coefficient */
type Poly = Map<string, number>;

export type Size = number | string;

function parse(s: Size): Poly {
  const p: Poly = new Map();
  if (typeof s === 'number') {
    if (s !== 0) p.set('', s);
    return p;
  }
  for (const term of s.split(' + ')) {
    const m = /^(-?\d+)(?:\*(.+))?$/.exec(term);
    const [coef, mono] = m ? [Number(m[1]), m[2] ?? ''] : [1, term];
    p.set(mono, (p.get(mono) ?? 0) + coef);
  }
  return p;
}

function format(p: Poly): Size {
  const terms = [...p]
    .filter(([, c]) => c !== 0)
    .sort(([a], [b]) => (a === '' ? 1 : b === '' ? -1 : a < b ? -1 : a > b ? 1 : 0));
  if (terms.length === 0) return 0;
  if (terms.length === 1 && terms[0][0] === '') return terms[0][1];
  return terms.map(([mono, c]) => (mono === '' ? `${c}` : c === 1 ? mono : `${c}*${mono}`)).join(' + ');
}

const monoTimes = (a: string, b: string): string =>
  [...(a ? a.split('*') : []), ...(b ? b.split('*') : [])].sort().join('*');

/** The largest integer known to divide a size whatever its symbols are: 77 for 77, 2 for `2*batch`, 1 for `seq`. */
export function knownFactor(s: Size): number {
  const gcd = (a: number, b: number): number => (b === 0 ? Math.abs(a) : gcd(b, a % b));
  return [...parse(s).values()].reduce(gcd, 0) || 1;
}

export function addSize(a: Size, b: Size, sign = 1): Size {
  const p = parse(a);
  for (const [mono, c] of parse(b)) p.set(mono, (p.get(mono) ?? 0) + sign * c);
  return format(p);
}

export const subSize = (a: Size, b: Size): Size => addSize(a, b, -1);

export function mulSize(a: Size, b: Size): Size {
  const p: Poly = new Map();
  for (const [ma, ca] of parse(a))
    for (const [mb, cb] of parse(b)) p.set(monoTimes(ma, mb), (p.get(monoTimes(ma, mb)) ?? 0) + ca * cb);
  return format(p);
}

/** a / b when b is a single term that divides every term of a exactly; undefined otherwise. */
export function divSizeExact(a: Size, b: Size): Size | undefined {
  const divisor = [...parse(b)];
  if (divisor.length !== 1) return undefined;
  const [[dMono, dCoef]] = divisor;
  const dSyms = dMono ? dMono.split('*') : [];
  const p: Poly = new Map();
  for (const [mono, c] of parse(a)) {
    if (c % dCoef !== 0) return undefined;
    const syms = mono ? mono.split('*') : [];
    for (const s of dSyms) {
      const i = syms.indexOf(s);
      if (i < 0) return undefined;
      syms.splice(i, 1);
    }
    p.set(syms.join('*'), c / dCoef);
  }
  return format(p);
}
