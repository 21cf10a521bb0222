/**
 * `npm run fit:latent-rgb -- <diffusers pipeline folder> <images folder> [count] [file-name prefix]`: fit the
 * preview projection (latent channels → RGB, plus a bias) of a pipeline to its own VAE and write `latent_rgb.json`
 * into the pipeline folder. Pictures are encoded to UNet-space latents (posterior mean × scaling_factor) and decoded
 * again; the decoded pixels, averaged over each latent cell, are what the linear map is fitted to, by least squares.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadVae, buildVaeDecoderGraph, buildVaeEncoderGraph } from '../models/vae.js';
import { serializeModel } from '../onnx/serialize.js';
import { createSession, run } from '../onnx/session.js';
import { LATENT_RGB_FILE, latentsToRgb, type LatentRgb } from './preview.js';

/** Solve the normal equations (XᵀX) w = Xᵀy for a small square system, by Gaussian elimination with pivoting. */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i]!]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r]![c]!) > Math.abs(m[p]![c]!)) p = r;
    [m[c], m[p]] = [m[p]!, m[c]!];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r]![c]! / m[c]![c]!;
      for (let k = c; k <= n; k++) m[r]![k]! -= f * m[c]![k]!;
    }
  }
  return m.map((row, i) => row[n]! / row[i]!);
}

/** Least-squares fit of rgb ≈ latent · factors + bias over latent cells. */
export function fitLatentRgb(
  latents: Float32Array,
  pooled: Float32Array,
  n: number,
  C: number,
  plane: number,
): LatentRgb {
  const k = C + 1;
  const xtx = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  const xty = Array.from({ length: 3 }, () => new Array<number>(k).fill(0));
  const x = new Array<number>(k);
  for (let b = 0; b < n; b++) {
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < C; c++) x[c] = latents[(b * C + c) * plane + p]!;
      x[C] = 1;
      for (let i = 0; i < k; i++) {
        for (let j = 0; j < k; j++) xtx[i]![j]! += x[i]! * x[j]!;
        for (let o = 0; o < 3; o++) xty[o]![i]! += x[i]! * pooled[(b * 3 + o) * plane + p]!;
      }
    }
  }
  const w = [0, 1, 2].map((o) => solve(xtx, xty[o]!));
  const round = (v: number) => Number(v.toFixed(4));
  return {
    factors: Array.from({ length: C }, (_, c) => w.map((col) => round(col[c]!))),
    bias: w.map((col) => round(col[C]!)) as [number, number, number],
  };
}

async function main() {
  const [pipelineDir, imagesDir, countArg = '256', prefix = ''] = process.argv.slice(2);
  if (!pipelineDir || !imagesDir) {
    process.stderr.write('usage: npm run fit:latent-rgb -- <pipeline folder> <images folder> [count] [prefix]\n');
    process.exit(2);
  }
  const { config, weights } = loadVae(join(pipelineDir, 'vae'));
  const encoder = await createSession(serializeModel(buildVaeEncoderGraph(config, weights)));
  const decoder = await createSession(serializeModel(buildVaeDecoderGraph(config, weights)));
  weights.close();
  const files = readdirSync(imagesDir)
    .filter((f) => f.startsWith(prefix) && f.endsWith('.png'))
    .sort()
    .slice(0, Number(countArg));
  const first = await sharp(join(imagesDir, files[0]!)).metadata();
  const [H, W] = [first.height!, first.width!];
  const n = files.length;
  const image = new Float32Array(n * 3 * H * W);
  for (const [b, f] of files.entries()) {
    const rgb = await sharp(join(imagesDir, f)).removeAlpha().resize(W, H).raw().toBuffer();
    for (let p = 0; p < H * W; p++)
      for (let c = 0; c < 3; c++) image[(b * 3 + c) * H * W + p] = (rgb[p * 3 + c]! / 255) * 2 - 1;
  }
  const { latent_mean: mean } = await run(encoder, { image: { dtype: 'F32', shape: [n, 3, H, W], data: image } });
  const latents = mean.data.map((v) => v * config.scalingFactor);
  const C = config.latentChannels;
  const [h, w] = mean.shape.slice(2) as [number, number];
  const { image: decoded } = await run(decoder, { latents: { dtype: 'F32', shape: [n, C, h, w], data: latents } });
  const s = H / h;
  const pooled = new Float32Array(n * 3 * h * w);
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const v = Math.min(1, Math.max(-1, decoded.data[((b * 3 + c) * H + y) * W + x]!));
          pooled[((b * 3 + c) * h + Math.floor(y / s)) * w + Math.floor(x / s)]! += v / (s * s);
        }
      }
    }
  }
  const fit = fitLatentRgb(latents, pooled, n, C, h * w);
  // The error of the fit in 8-bit levels, on the pictures it was fitted to.
  const rgb = latentsToRgb(latents, n, h, w, fit);
  const byte = (b: number, o: number, p: number) => ((pooled[(b * 3 + o) * h * w + p]! + 1) / 2) * 255;
  const meanByte = [0, 1, 2].map((o) => {
    let sum = 0;
    for (let b = 0; b < n; b++) for (let p = 0; p < h * w; p++) sum += byte(b, o, p);
    return sum / (n * h * w);
  });
  let se = 0;
  let seMean = 0;
  for (let b = 0; b < n; b++) {
    for (let p = 0; p < h * w; p++) {
      for (let o = 0; o < 3; o++) {
        se += (rgb[b]![p * 3 + o]! - byte(b, o, p)) ** 2;
        seMean += (meanByte[o]! - byte(b, o, p)) ** 2;
      }
    }
  }
  const out = join(pipelineDir, LATENT_RGB_FILE);
  const rows = fit.factors.map((r) => `    ${JSON.stringify(r)}`).join(',\n');
  writeFileSync(out, `{\n  "factors": [\n${rows}\n  ],\n  "bias": ${JSON.stringify(fit.bias)}\n}\n`);
  const rms = (v: number) => Math.sqrt(v / (n * h * w * 3)).toFixed(1);
  process.stderr.write(
    `fit on ${n} pictures (${n * h * w} latent cells): RMS error ${rms(se)} of 255 per channel ` +
      `(predicting each channel's mean: ${rms(seMean)}); wrote ${out}\n`,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
