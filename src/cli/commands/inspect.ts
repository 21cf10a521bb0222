import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { crossAttentionDim, encoderHiddenSize, inspectPath, type Inspection } from '../../models/inspect.js';
import { UsageError } from '../errors.js';

function size(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u ? 1 : 0)} ${units[u]}`;
}

function count(n: number): string {
  return n >= 1e9
    ? `${(n / 1e9).toFixed(2)} B`
    : n >= 1e6
      ? `${(n / 1e6).toFixed(1)} M`
      : n >= 1e3
        ? `${(n / 1e3).toFixed(1)} k`
        : String(n);
}

function describe(i: Inspection): string {
  const lines = [`${i.path}: ${i.kind}`];
  for (const p of i.parts) {
    const dtypes = Object.entries(p.dtypes)
      .map(([d, n]) => `${d}×${n}`)
      .join(' ');
    const params = p.parameters === undefined ? '' : `, ${count(p.parameters)} parameters`;
    lines.push(`  ${p.name}: ${size(p.bytes)}${params}, ${dtypes}`);
    for (const [k, v] of Object.entries(p.details))
      lines.push(`    ${k}: ${Array.isArray(v) ? v.join('; ') : String(v)}`);
  }
  if (i.fit)
    lines.push(
      `  text encoder hidden size ${i.fit.encoderHiddenSize} ${i.fit.fits ? 'fits' : 'does NOT fit'} the ` +
        `UNet's cross_attention_dim ${i.fit.crossAttentionDim}`,
    );
  for (const n of i.notes) lines.push(`  ${n}`);
  return lines.join('\n');
}

/** `safe-sd inspect <path> [--pipeline <path>] [--json]`: what a checkpoint is, from headers and configs only. */
export function register(program: Command): void {
  program
    .command('inspect')
    .description(
      'say what a model folder or file is (diffusers, single-file SD, CLIP, ONNX export), its parts, dtypes, ' +
        'sizes; reads headers only',
    )
    .argument('<path>', 'folder or file')
    .option(
      '--pipeline <path>',
      'also check that <path>, as a text encoder, fits this pipeline (hidden size vs cross_attention_dim)',
    )
    .option('--json', 'print JSON')
    .action((path: string, o: { pipeline?: string; json?: boolean }) => {
      for (const p of [path, o.pipeline]) if (p && !existsSync(p)) throw new UsageError(`${p}: no such file or folder`);
      const inspection = inspectPath(path);
      let encoderFit: { encoderHiddenSize?: number; crossAttentionDim?: number; fits: boolean } | undefined;
      if (o.pipeline) {
        const hidden = encoderHiddenSize(inspection);
        const cross = crossAttentionDim(inspectPath(o.pipeline));
        if (hidden === undefined) throw new UsageError(`${path}: not a text encoder (no text hidden size found)`);
        if (cross === undefined)
          throw new UsageError(`--pipeline ${o.pipeline}: not a pipeline (no cross_attention_dim found)`);
        encoderFit = { encoderHiddenSize: hidden, crossAttentionDim: cross, fits: hidden === cross };
      }
      if (o.json) {
        process.stdout.write(
          `${JSON.stringify(encoderFit ? { ...inspection, pipeline_fit: encoderFit } : inspection)}\n`,
        );
        return;
      }
      process.stdout.write(`${describe(inspection)}\n`);
      if (encoderFit) {
        process.stdout.write(
          `  as an encoder of ${o.pipeline}: hidden size ${encoderFit.encoderHiddenSize} ` +
            `${encoderFit.fits ? 'fits' : 'does NOT fit'} its cross_attention_dim ` +
            `${encoderFit.crossAttentionDim}\n`,
        );
      }
    });
}
