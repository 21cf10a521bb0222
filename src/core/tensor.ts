/** Element types the project reads and writes; names follow safetensors. */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'U8' | 'BOOL';

export type TensorData = Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

/** A dense row-major tensor. F16 and BF16 payloads are kept as raw 16-bit words. */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TensorData;
}

/** A float32 tensor: what every graph computes in on the CPU. */
export interface F32Tensor extends Tensor {
  dtype: 'F32';
  data: Float32Array;
}

export const DTYPE_BYTES: Record<DType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1, BOOL: 1 };

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function f32(data: Float32Array, shape: number[]): F32Tensor {
  if (data.length !== numel(shape)) throw new Error(`f32: ${data.length} values do not fill shape [${shape}]`);
  return { dtype: 'F32', shape, data };
}

export function shapeEquals(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

const f16Exp = new Float32Array(32);
for (let e = 0; e < 32; e++) f16Exp[e] = 2 ** (e - 15);

/** IEEE half to single, exact (subnormals, infinities and NaN included). */
export function f16ToF32(words: Uint16Array): Float32Array {
  const out = new Float32Array(words.length);
  for (let i = 0; i < words.length; i++) {
    const h = words[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * f16Exp[exp] * (1 + frac / 1024);
  }
  return out;
}

/** bfloat16 is the top half of a float32: widen by shifting the bits. */
export function bf16ToF32(words: Uint16Array): Float32Array {
  const bits = new Uint32Array(words.length);
  for (let i = 0; i < words.length; i++) bits[i] = words[i] << 16;
  return new Float32Array(bits.buffer);
}

/** Round-to-nearest-even single to half, for writers of fp16 checkpoints and graphs. */
export function f32ToF16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < values.length; i++) {
    f[0] = values[i];
    const x = u[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let half = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const mid = 1 << (shift - 1);
      if (rem > mid || (rem === mid && half & 1)) half++;
      out[i] = sign | half;
      continue;
    }
    let half = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
    out[i] = sign | half;
  }
  return out;
}

/** Any floating tensor as float32; integer tensors are refused (they are ids, not weights). */
export function toF32(t: Tensor, what = 'tensor'): F32Tensor {
  switch (t.dtype) {
    case 'F32':
      return t as F32Tensor;
    case 'F16':
      return { dtype: 'F32', shape: t.shape, data: f16ToF32(t.data as Uint16Array) };
    case 'BF16':
      return { dtype: 'F32', shape: t.shape, data: bf16ToF32(t.data as Uint16Array) };
    default:
      throw new Error(`${what}: expected a floating-point tensor, got ${t.dtype}`);
  }
}
