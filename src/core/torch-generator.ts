/**
 * torch's CPU random generator, reproduced bit for bit: `torch.randn(shape, generator=torch.Generator()
 * .manual_seed(seed))` on the CPU gives the same float32 values as `new TorchGenerator(seed).randn(shape)`, so a
 * seed means the same picture here as in diffusers.
 *
 * Follows ATen: the mt19937 engine (core/MT19937RNGEngine.h), the uniform transforms (core/TransformationHelper.h,
 * core/DistributionsHelper.h) and the normal kernel (native/cpu/DistributionTemplates.h) in its x86 AVX2 build, whose
 * Box-Muller uses the float polynomials of avx_mathfun.h rather than libm.
 */

const N = 624;
const M = 397;

/** The 32-bit Mersenne Twister, seeded as ATen seeds it (only the seed's low 32 bits count). */
class Mt19937 {
  private readonly state = new Uint32Array(N);
  private next = 0;
  private left = 1;

  constructor(seed32: number) {
    const s = this.state;
    s[0] = seed32;
    for (let j = 1; j < N; j++) {
      const prev = s[j - 1] ^ (s[j - 1] >>> 30);
      s[j] = Math.imul(1812433253, prev) + j;
    }
  }

  nextU32(): number {
    if (--this.left === 0) this.refill();
    let y = this.state[this.next++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  private refill(): void {
    const s = this.state;
    const twist = (u: number, v: number) => (((u & 0x80000000) | (v & 0x7fffffff)) >>> 1) ^ (v & 1 ? 0x9908b0df : 0);
    for (let k = 0; k < N; k++) s[k] = s[(k + M) % N] ^ twist(s[k], s[(k + 1) % N]);
    this.left = N;
    this.next = 0;
  }
}

const f = Math.fround;
const F32_BITS = new Float32Array(1);
const U32_OF_F32 = new Uint32Array(F32_BITS.buffer);

/**
 * Float32 fused multiply-add, rounded once. torch's AVX2 kernel is built with FMA enabled, and the compiler fuses
 * avx_mathfun's multiply-then-add pairs; without the same fusions 1 value in 100 is 1 ulp off.
 */
export function fma(a: number, b: number, c: number): number {
  const p = a * b; // exact in double: two 24-bit significands
  const s = p + c;
  const r = f(s);
  if (r === s) return r;
  const t = s - p;
  const err = p - (s - t) + (c - t); // what rounding p + c to double dropped
  if (err === 0) return r;
  // Rounding twice (to double, then to float) differs from rounding once only when s fell exactly halfway
  // between two floats: then the dropped part decides.
  F32_BITS[0] = r;
  U32_OF_F32[0] += Math.abs(s) > Math.abs(r) ? 1 : -1;
  const other = F32_BITS[0];
  if (s - r !== other - s) return r;
  return err > 0 === other > r ? other : r;
}

// avx_mathfun.h constants, as the float32 values the C compiler stores. Where avx_mathfun writes more digits than
// a double holds, the literal here is the double they round to, which C too reads before storing it as float:
// avx_mathfun's 0.707106781186547524 (SQRTHF) is the double Math.SQRT1_2, its -3.77489497744594108e-8 (DP3) is
// -3.774894977445941e-8.
const SQRTHF = f(Math.SQRT1_2);
const LOG_P = [
  7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
  2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
].map(f);
const LOG_Q1 = f(-2.1219444e-4);
const LOG_Q2 = f(0.693359375);
const FOPI = f(1.27323954473516); // 4 / pi
const DP1 = f(-0.78515625);
const DP2 = f(-2.4187564849853516e-4); // exactly -2.4187564849853515625e-4, a float
const DP3 = f(-3.774894977445941e-8);
const SINCOF = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(f);
const COSCOF = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2].map(f);
const TWO_PI_F32 = f(2 * Math.PI);

/** avx_mathfun's log256_ps for one positive normal float: Cephes' logf, every step rounded to float. */
function logF32(v: number): number {
  F32_BITS[0] = v;
  const bits = U32_OF_F32[0];
  // Split into exponent and a mantissa in [0.5, 1).
  U32_OF_F32[0] = (bits & ~0x7f800000) | 0x3f000000;
  let x = F32_BITS[0];
  let e = (bits >>> 23) - 127 + 1;
  if (x < SQRTHF) {
    e -= 1;
    x = f(f(x - 1) + x);
  } else {
    x = f(x - 1);
  }
  const z = f(x * x);
  let y = LOG_P[0];
  for (let i = 1; i < LOG_P.length; i++) y = fma(y, x, LOG_P[i]);
  y = fma(f(y * x), z, f(e * LOG_Q1));
  y = fma(-z, 0.5, y);
  return fma(e, LOG_Q2, f(x + y));
}

/** avx_mathfun's sincos256_ps for one float in [0, 2pi): Cephes' sinf/cosf with both polynomials evaluated. */
function sinCosF32(v: number): [number, number] {
  let j = Math.trunc(f(v * FOPI));
  j = (j + 1) & ~1;
  const y0 = j;
  const sinNegative = (j & 4) !== 0;
  const cosNegative = ((j - 2) & 4) === 0;
  const sinFromSinPoly = (j & 2) === 0;
  // x - j * pi/4 in three parts, for precision.
  let x = fma(y0, DP1, v);
  x = fma(y0, DP2, x);
  x = fma(y0, DP3, x);
  const z = f(x * x);
  let c = fma(fma(COSCOF[0], z, COSCOF[1]), z, COSCOF[2]);
  c = f(fma(f(c * z), z, -f(z * 0.5)) + 1);
  let s = fma(fma(SINCOF[0], z, SINCOF[1]), z, SINCOF[2]);
  s = fma(f(s * z), x, x);
  // The select-by-mask adds and subtracts zeros; kept so that signed zeros come out as in torch.
  const sinPart2 = sinFromSinPoly ? s : 0;
  const sinPart1 = sinFromSinPoly ? 0 : c;
  const sin = f(sinPart1 + sinPart2);
  const cos = f(f(c - sinPart1) + f(s - sinPart2));
  return [sinNegative ? -sin : sin, cosNegative ? -cos : cos];
}

/** Box-Muller on 16 uniforms in place: data[j] and data[j + 8] become the pair drawn from them. */
function normalFill16(data: Float32Array, at: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - data[at + j]); // (0, 1] for the log
    const radius = f(Math.sqrt(f(-2 * logF32(u1))));
    const [sin, cos] = sinCosF32(f(TWO_PI_F32 * data[at + j + 8]));
    // torch ends with fmadd(n, std = 1, mean = 0); the + 0 turns a -0 into +0 as that does.
    data[at + j] = f(radius * cos) + 0;
    data[at + j + 8] = f(radius * sin) + 0;
  }
}

function toSeed32(seed: bigint | number): number {
  if (typeof seed === 'number' && !Number.isSafeInteger(seed))
    throw new Error(`seed ${seed} is not an integer (pass a bigint for seeds over 2^53)`);
  // torch takes the seed as uint64 (negative seeds wrap) and seeds mt19937 with its low 32 bits.
  return Number(BigInt.asUintN(32, BigInt(seed)));
}

/** torch.Generator() on the CPU: `randn` draws continue from the state the previous draw left. */
export class TorchGenerator {
  private engine!: Mt19937;
  private cachedNormal: number | undefined;

  /** Without a seed, torch.Generator()'s default seed. */
  constructor(seed: bigint | number = 67280421310721n) {
    this.manualSeed(seed);
  }

  manualSeed(seed: bigint | number): this {
    this.engine = new Mt19937(toSeed32(seed));
    this.cachedNormal = undefined;
    return this;
  }

  /** Standard normal float32 values in row-major order, as torch.randn(shape, generator). */
  randn(shape: readonly number[]): Float32Array {
    for (const d of shape) if (!Number.isInteger(d) || d < 0) throw new Error(`randn: bad shape [${shape.join(', ')}]`);
    const size = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(size);
    if (size >= 16) {
      for (let i = 0; i < size; i++) out[i] = this.uniformF32();
      for (let i = 0; i + 16 <= size; i += 16) normalFill16(out, i);
      if (size % 16 !== 0) {
        // torch redraws the last 16 values from fresh uniforms, overwriting the overlap with the last full block.
        const tail = size - 16;
        for (let i = 0; i < 16; i++) out[tail + i] = this.uniformF32();
        normalFill16(out, tail);
      }
    } else {
      for (let i = 0; i < size; i++) out[i] = this.normalF64();
    }
    return out;
  }

  /** uniform_real_distribution<float>(0, 1): 24 random bits. */
  private uniformF32(): number {
    return (this.engine.nextU32() & 0xffffff) / 0x1000000;
  }

  /** uniform_real_distribution<double>(0, 1): the low 53 bits of two draws, the first one high. */
  private uniformF64(): number {
    const hi = this.engine.nextU32();
    const lo = this.engine.nextU32();
    return ((hi & 0x1fffff) * 0x100000000 + lo) / 2 ** 53;
  }

  /** normal_distribution<double>: Box-Muller in double, the second value of each pair kept for the next call. */
  private normalF64(): number {
    if (this.cachedNormal !== undefined) {
      const cached = this.cachedNormal;
      this.cachedNormal = undefined;
      return cached;
    }
    const u1 = this.uniformF64();
    const u2 = this.uniformF64();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.cachedNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}
