import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import * as ort from 'onnxruntime-node';
import { providerSettings, type Provider } from '../onnx/session.js';
import { readManifest } from '../pipeline/manifest.js';
import { attackSection } from './attack-bench.js';
import { kernelSection } from './kernels.js';
import type { BenchRow } from './measure.js';
import { fidSection, finetuneSection } from './optional.js';
import { referenceSection } from './reference.js';
import { sd15Section } from './sd15-bench.js';
import { settingsSection } from './settings-bench.js';
import { batchingSection, firstImageSection, toyOverheadSection } from './toy-bench.js';

/**
 * Section letters as the issue names them, plus 'kernels' (attention and GroupNorm lowerings), 'settings' (session
 * options on the toy UNet) and 'attack' (adversarial prompt search and adversarial training).
 */
export const SECTIONS = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'kernels', 'settings', 'attack'] as const;
export type Section = (typeof SECTIONS)[number];

export interface BenchOptions {
  only?: Section[];
  skipSd15?: boolean;
  /** Timed SD 1.5 denoising steps per configuration. */
  sd15Steps: number;
  /** Also open SD 1.5 at 'extended' optimisation and time it (adds about a minute). */
  compareLevels?: boolean;
  /** Also time SD 1.5 with every attention plain and every attention fused (adds about three minutes). */
  compareAttention?: boolean;
  manifest: string;
  /** Execution provider of the SD 1.5 and toy pipeline sessions; a and kernels always measure the CPU. */
  provider?: Provider;
  json?: boolean;
  out?: string;
  log?: (line: string) => void;
}

export interface BenchReport {
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; onnxruntime: string };
  date: string;
  rows: BenchRow[];
}

function fmt(v: number | undefined): string {
  if (v === undefined) return '-';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(v < 0.01 ? 4 : 3);
}

export function formatTable(rows: BenchRow[]): string {
  const cells = rows.map((r) => [r.section, r.name, fmt(r.value), r.unit, r.target ?? '', r.note ?? '']);
  const head = ['section', 'measurement', 'value', 'unit', 'target', 'note'];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c
      .map((x, i) => (i === 2 ? x.padStart(widths[i]) : x.padEnd(widths[i])))
      .join(' | ')
      .trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('-|-'), ...cells.map(line)].join('\n');
}

function toyPipelineDir(manifest: string): string {
  const m = readManifest(manifest);
  return m.pipelines.find((p) => p.name === m.defaultPipeline)!.path;
}

/** Run the selected sections in order, each once, on this machine. */
export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const want = (s: Section) => (!o.only || o.only.includes(s)) && !(o.skipSd15 && (s === 'b' || s === 'e'));
  const log = o.log ?? (() => {});
  const rows: BenchRow[] = [];
  const section = async (name: string, fn: () => Promise<BenchRow[]>) => {
    const t = performance.now();
    log(`${name}...`);
    rows.push(...(await fn()));
    log(`${name}: ${((performance.now() - t) / 1000).toFixed(0)} s`);
  };
  let peak: number | undefined;
  if (want('a') || want('b')) {
    await section('a reference', async () => {
      const r = await referenceSection();
      peak = r.peak;
      return want('a') ? r.rows : [];
    });
  }
  if (want('kernels')) await section('kernels', kernelSection);
  if (want('settings')) await section('settings', () => settingsSection(toyPipelineDir(o.manifest)));
  // b, e and the SD 1.5 half of c share one saved graph and one child process.
  if (!o.skipSd15 && (want('b') || want('e') || (o.only?.includes('c') ?? true))) {
    await section('SD 1.5 UNet', async () => {
      const all = await sd15Section({
        peak: peak!,
        steps: o.sd15Steps,
        compareLevels: !!o.compareLevels,
        compareAttention: !!o.compareAttention,
        settings: providerSettings(o.provider ?? 'cpu'),
      });
      return all.filter((r) => want(r.section[0] as Section));
    });
  }
  const session = providerSettings(o.provider ?? 'cpu');
  if (want('c')) await section('c toy pipeline overhead', () => toyOverheadSection(o.manifest, session));
  if (want('d')) await section('d batching', () => batchingSection(o.manifest, session));
  if (want('f')) await section('f toy first image', () => firstImageSection(o.manifest, o.provider ?? 'cpu'));
  if (want('g')) await section('g fine-tuning', finetuneSection);
  if (want('h')) await section('h FID', fidSection);
  if (want('attack')) await section('attack', attackSection);
  const report: BenchReport = {
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '?',
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      onnxruntime: ort.env.versions.common,
    },
    date: new Date().toISOString(),
    rows,
  };
  if (o.out) writeFileSync(o.out, `${JSON.stringify(report, null, 2)}\n`);
  return report;
}

export function printReport(report: BenchReport, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const m = report.machine;
  process.stdout.write(
    `${m.cpuModel}, ${m.cpus} CPUs, ${m.memoryGiB} GiB, Node ${m.node}, onnxruntime ` +
      `${m.onnxruntime}\n\n${formatTable(report.rows)}\n`,
  );
}
