import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SingleBar } from 'cli-progress';
import { InvalidArgumentError, type Command } from 'commander';
import { loadClassifiers } from '../../classifiers/load.js';
import { parseNsfwjsSpec } from '../../classifiers/nsfwjs.js';
import { parseServers } from '../../eval/generate-remote.js';
import { readEvalPrompts } from '../../eval/prompt-sets.js';
import type { EvalReport } from '../../eval/report.js';
import { mergeEvaluation, runEvaluation, runShard } from '../../eval/run.js';
import { RunFolderError } from '../../eval/run-state.js';
import { parseShard, type ShardSpec } from '../../eval/shards.js';
import { providerSettings, type Provider } from '../../onnx/session.js';
import { DEFAULT_MANIFEST, manifestForModel, readManifest, type Manifest } from '../../pipeline/manifest.js';
import { UsageError } from '../errors.js';
import { intOption, numberOption, providerOption, seedOption } from '../options.js';

interface EvalCliOptions {
  prompts?: string;
  pipeline?: string;
  manifest?: string;
  encoders?: string;
  servers?: string;
  concurrency?: number;
  batch?: number;
  provider: Provider;
  shard?: ShardSpec;
  merge?: string;
  imagesPerPrompt?: number;
  classifier: string[];
  clip?: string;
  fidRef?: string;
  fidModel?: string;
  limit?: number;
  skip?: number;
  steps?: number;
  guidance?: number;
  scheduler?: string;
  seed?: bigint;
  promptColumn?: string;
  seedColumn?: string;
  guidanceColumn?: string;
  attackSet?: boolean;
  out?: string;
}

/** `--pipeline` may name a manifest pipeline or a diffusers folder. */
function manifestFor(o: EvalCliOptions): { manifest: Manifest; pipeline?: string } {
  if (o.pipeline && existsSync(o.pipeline) && statSync(o.pipeline).isDirectory())
    return { manifest: manifestForModel(o.pipeline) };
  const file = o.manifest ?? DEFAULT_MANIFEST;
  if (!existsSync(file)) throw new UsageError(`--manifest ${file}: no such file`);
  return { manifest: readManifest(file), pipeline: o.pipeline };
}

export function register(program: Command): void {
  program
    .command('eval')
    .description(
      'generate a prompt set with each encoder and measure NSFW rate, FID and CLIPScore; writes report.json ' +
        'and report.html',
    )
    .option('--prompts <file>', 'I2P-style CSV, ViSU JSONL, or text (one prompt a line) (required unless --merge)')
    .option('--pipeline <name|dir>', 'pipeline name in the manifest, or a diffusers folder')
    .option('--manifest <file>', 'pipeline manifest', undefined)
    .option('--encoders <a,b,...>', 'encoders to compare, e.g. original,safe (required unless --merge)')
    .option(
      '--servers <targets>',
      'generate through safe-sd servers instead of in this process: host:port,... or dns:///name:port ' +
        '(round-robin over its addresses)',
    )
    .option(
      '--concurrency <n>',
      'calls in flight per --servers target and resolved address (default 2)',
      intOption('--concurrency'),
    )
    .option('--batch <n>', 'in-process: jobs sharing one UNet batch (default 8)', intOption('--batch'))
    .addOption(providerOption())
    .option(
      '--shard <i/n>',
      'generate only slice i of n (0-based) into --out, shared with the other slices; no report',
      shardOption,
    )
    .option(
      '--merge <dir>',
      'check that every slice of a sharded run in <dir> is complete, then score it and write the report',
    )
    .option('--images-per-prompt <n>', 'images per prompt', intOption('--images-per-prompt'))
    .option(
      '--classifier <nsfwjs|descriptor.json>',
      'content classifier (repeatable); default nsfwjs',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--clip <dir>', "CLIPModel folder for CLIPScore and FD-CLIP features (default: the pipeline world's)")
    .option('--fid-ref <dir|stats.safetensors>', 'reference images or cached statistics for FID')
    .option('--fid-model <file.onnx>', 'Inception ONNX (pool3, 2048 features) instead of CLIP features')
    .option('--limit <n>', 'only the first n rows of the prompt file (after --skip)', intOption('--limit'))
    .option(
      '--skip <n>',
      'leave out the first n rows (a held-out slice: rows keep their index, and so their seed)',
      intOption('--skip'),
    )
    .option('--steps <n>', 'denoising steps', intOption('--steps'))
    .option('--guidance <g>', 'guidance scale when the prompt file gives none', numberOption('--guidance'))
    .option('--scheduler <name>', 'scheduler')
    .option('--seed <s>', 'base seed when the prompt file gives none (seed = base + row index)', seedOption('--seed'))
    .option(
      '--prompt-column <name>',
      'CSV: the column holding the prompt (default: by layout, e.g. prompt, adv_prompt)',
    )
    .option('--seed-column <name>', "CSV: the column holding each prompt's seed")
    .option('--guidance-column <name>', "CSV: the column holding each prompt's guidance scale")
    .option(
      '--attack-set',
      "the prompts are an attack's (e.g. UnlearnDiffAtk, P4D in I2P's columns): report the attack success rate",
    )
    .option('--out <dir>', 'run folder (resumable: a rerun does only what is missing) (required unless --merge)')
    .action(async (o: EvalCliOptions) => {
      if (o.merge !== undefined) return merge(o.merge, o);
      for (const [flag, v] of [
        ['--prompts', o.prompts],
        ['--encoders', o.encoders],
        ['--out', o.out],
      ] as const) {
        if (v === undefined) throw new UsageError(`required option '${flag}' not specified`);
      }
      const { out, prompts: promptFile } = o as Required<Pick<EvalCliOptions, 'out' | 'prompts'>>;
      let set: ReturnType<typeof readEvalPrompts>;
      try {
        const columns = { prompt: o.promptColumn, seed: o.seedColumn, guidance: o.guidanceColumn };
        set = readEvalPrompts(promptFile, o.limit, o.skip, columns);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      for (const p of set.problems) process.stderr.write(`safe-sd: ${promptFile}:${p.line}: skipped: ${p.message}\n`);
      if (set.prompts.length === 0) throw new UsageError(`${promptFile}: no usable prompt`);
      const { manifest, pipeline } = manifestFor(o);
      const encoders = o
        .encoders!.split(',')
        .map((e) => e.trim())
        .filter(Boolean);
      if (encoders.length === 0) throw new UsageError('--encoders names no encoder');
      const classifierSpecs = o.classifier.length ? o.classifier : ['nsfwjs'];
      const servers = o.servers === undefined ? undefined : parseServers(o.servers);
      const progress = progressBars();
      const run = {
        prompts: set.prompts,
        promptSource: promptFile,
        promptLayout: set.layout,
        attackSet: o.attackSet,
        manifest,
        pipeline,
        encoders,
        servers,
        remote: o.concurrency ? { concurrency: o.concurrency } : undefined,
        batchSize: o.batch,
        session: providerSettings(o.provider),
        imagesPerPrompt: o.imagesPerPrompt,
        clipDir: o.clip,
        fidRef: o.fidRef,
        fidModel: o.fidModel,
        steps: o.steps,
        guidanceScale: o.guidance,
        scheduler: o.scheduler,
        seed: o.seed,
        out,
        onWarning: (m: string) => process.stderr.write(`safe-sd: warning: ${m}\n`),
        onProgress: progress.update,
      };
      if (o.shard) {
        // The merge loads and runs the classifiers; a slice only checks that they can be found.
        for (const spec of classifierSpecs) {
          if (!parseNsfwjsSpec(spec) && !existsSync(spec))
            throw new UsageError(`--classifier ${spec}: neither 'nsfwjs[:threshold]' nor an existing descriptor file`);
        }
        const scoring = {
          classifiers: classifierSpecs,
          clip: o.clip,
          fidRef: o.fidRef ?? null,
          fidModel: o.fidModel ?? null,
        };
        try {
          const r = await usage(runShard({ ...run, classifiers: [] }, o.shard, scoring));
          const failed = Object.keys(r.failedJobs).length;
          process.stderr.write(
            `safe-sd: slice ${r.shard.index}/${r.shard.count}: ${r.prompts} prompts, ` +
              `${r.generatedThisRun} images made now` +
              `${failed ? `, ${failed} jobs failed (run the slice again)` : ', complete'}; ` +
              `merge with: safe-sd eval --merge ${out}\n`,
          );
          if (failed) process.exitCode = 3;
        } finally {
          progress.stop();
        }
        return;
      }
      // Every classifier is loaded before generation starts: a broken descriptor must not cost a long run its metric.
      const classifiers = await loadCheckedClassifiers(classifierSpecs);
      try {
        const report = await usage(runEvaluation({ ...run, classifiers }));
        printReport(report, out);
        exitForCompleteness(report);
      } finally {
        progress.stop();
        for (const c of classifiers) await c.close();
      }
    });
}

async function merge(dir: string, o: EvalCliOptions): Promise<void> {
  const given = (['prompts', 'encoders', 'out', 'shard', 'servers'] as const).filter((k) => o[k] !== undefined);
  if (given.length > 0)
    throw new UsageError(`--merge takes its settings from ${dir}/plan.json; leave out --${given[0]}`);
  if (!existsSync(dir)) throw new UsageError(`--merge ${dir}: no such folder`);
  const progress = progressBars();
  try {
    const report = await usage(
      mergeEvaluation(dir, {
        loadClassifiers: loadCheckedClassifiers,
        onWarning: (m) => process.stderr.write(`safe-sd: warning: ${m}\n`),
        onProgress: progress.update,
      }),
    );
    printReport(report, dir);
    exitForCompleteness(report);
  } finally {
    progress.stop();
  }
}

function loadCheckedClassifiers(specs: string[]): ReturnType<typeof loadClassifiers> {
  return loadClassifiers(specs).catch((e: Error) => {
    throw new UsageError(e.message);
  });
}

/** A refused slice or merge is bad input: one line, exit 2. */
async function usage<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw e instanceof RunFolderError ? new UsageError(e.message) : e;
  }
}

function shardOption(v: string): ShardSpec {
  try {
    return parseShard(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function progressBars() {
  const bars = new Map<string, SingleBar>();
  const tty = process.stderr.isTTY;
  return {
    update: (phase: string, done: number, total: number) => {
      if (!tty) return;
      let bar = bars.get(phase);
      if (!bar) {
        for (const b of bars.values()) b.stop();
        bar = new SingleBar({
          format: `${phase.padEnd(8)} [{bar}] {value}/{total} | ETA {eta_formatted} | {duration_formatted}`,
        });
        bar.start(total, 0);
        bars.set(phase, bar);
      }
      bar.update(done);
    },
    stop: () => {
      for (const b of bars.values()) b.stop();
    },
  };
}

function printReport(report: EvalReport, out: string): void {
  for (const e of report.encoders) {
    const own = Object.entries(e.ownClass)
      .map(([c, r]) => `${c}: unsafe->${r.unsafe.class ?? 'tag'} ${pct(r.unsafe.rate)}, safe->own ${pct(r.safe.rate)}`)
      .join('; ');
    const asr = e.attackSuccess ? `attack success ${pct(e.attackSuccess.rate)} of ${e.attackSuccess.of} prompts; ` : '';
    process.stderr.write(
      `safe-sd: ${e.encoder}: ${asr}NSFW ${pct(e.nsfwRate.rate)} of ${e.images} ` +
        `images${own ? `; ${own}` : ''}; FID ${e.fid?.toFixed(2) ?? '-'}; CLIPScore ` +
        `${e.clipScore?.toFixed(2) ?? '-'}\n`,
    );
  }
  process.stderr.write(`safe-sd: wrote ${join(out, 'report.json')} and ${join(out, 'report.html')}\n`);
}

function pct(r: number | null): string {
  return r === null ? '-' : `${(100 * r).toFixed(1)}%`;
}

/**
 * The exit code of a run (README, "Exit codes"): 0 when every expected image exists, 3 when some rows failed to
 * generate (the report covers the rest), 1 when no image exists at all. Bad input exits 2 before anything runs.
 */
function exitForCompleteness(report: EvalReport): void {
  const made = report.encoders.reduce((a, e) => a + e.images, 0);
  const expected = report.counts.expectedImages;
  const failed = Object.keys(report.counts.failedJobs).length;
  if (made === expected) return;
  const first = Object.entries(report.counts.failedJobs)[0];
  const why = first ? `; first failure ${first[0]}: ${first[1]}` : '';
  if (made === 0) throw new Error(`no image was produced: all ${expected} failed (${failed} failed generations${why})`);
  const missing = expected - made;
  process.stderr.write(`safe-sd: ${missing} of ${expected} images are missing (${failed} failed generations${why})\n`);
  process.exitCode = 3;
}
