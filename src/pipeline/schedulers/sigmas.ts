import { npLinspace } from './schedule.js';

/** Noise levels of the k-diffusion style schedulers, computed as numpy does (float64 over float32 tables). */

const f32 = Math.fround;

/** np.interp(x, arange(len(table)), table) for x inside [0, len - 1]. */
export function interpTable(x: number, table: Float32Array): number {
  const last = table.length - 1;
  if (x <= 0) return table[0];
  if (x >= last) return table[last];
  const j = Math.floor(x);
  if (j === x) return table[j];
  return (table[j + 1] - table[j]) * (x - j) + table[j];
}

/** Karras et al. (2022) eq. 5: n sigmas spaced evenly in sigma^(1/rho), rho = 7, from sigmaMax down to sigmaMin. */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((ramp) => (maxInv + ramp * (minInv - maxInv)) ** rho);
}

/** np.log of a float32 table: numpy keeps it in float32. */
export function logTable(table: Float32Array): Float32Array {
  return table.map(Math.log);
}

/**
 * The fractional training timestep whose sigma is `sigma`, interpolating linearly in log sigma between the two
 * neighbouring training sigmas (diffusers' _sigma_to_t; its denominator is a float32 difference).
 */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i] >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const w = Math.min(Math.max((logSigmas[low] - logSigma) / f32(logSigmas[low] - logSigmas[low + 1]), 0), 1);
  return (1 - w) * low + w * (low + 1);
}
