import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SingleBar } from 'cli-progress';
import { Option, type Command } from 'commander';
import { writeProtocol } from '../../attack/attack-csv.js';
import { RING_A_BELL_DEFAULTS } from '../../attack/ring-a-bell.js';
import {
  ATTACK_DEFAULTS,
  AttackInputError,
  METHODS,
  runAttack,
  type AttackOptions,
  type NamedEncoder,
} from '../../attack/run.js';
import { readTargets, type AttackTarget } from '../../attack/targets.js';
import { DEFAULT_MANIFEST, readManifest, type Manifest, type PipelineEntry } from '../../pipeline/manifest.js';
import { Tokenizer } from '../../pipeline/tokenizer.js';
import { UsageError } from '../errors.js';
import { intOption, numberOption } from '../options.js';

/** Commander's parse: the library's settings as given, the rest as names and text. */
type Flags = Pick<AttackOptions, 'method' | 'pairs' | 'tokens' | 'budget' | 'batch' | 'eta' | 'seed' | 'out'> & {
  pipeline?: string;
  manifest: string;
  encoder: string;
  conceptEncoder?: string;
  targets: string;
  limit?: number;
  skip: number;
  ban: string;
};

function encoderOf(p: PipelineEntry, name: string, flag: string): NamedEncoder {
  const e = p.encoders.find((x) => x.name === name);
  if (!e)
    throw new UsageError(
      `${flag} ${name}: pipeline '${p.name}' has no such encoder (it has ${p.encoders.map((x) => x.name).join(', ')})`,
    );
  return { name, dir: e.path };
}

function positive(flag: string, n: number | undefined): void {
  if (n !== undefined && n < 1) throw new UsageError(`${flag} expects a count of at least 1, got ${n}`);
}

export function register(program: Command): void {
  program
    .command('attack')
    .description(
      'search adversarial prompts against a text encoder (Ring-A-Bell, GCG) and write them as a CSV ' +
        'that `eval --prompts` replays',
    )
    .addOption(
      new Option(
        '--method <name>',
        'ring-a-bell (genetic search toward the concept-shifted target) or gcg (greedy coordinate gradient)',
      )
        .choices(METHODS)
        .makeOptionMandatory(),
    )
    .option('--pipeline <name>', "manifest pipeline (default: the manifest's default)")
    .option('--manifest <file>', 'pipeline manifest', DEFAULT_MANIFEST)
    .requiredOption('--encoder <name>', 'the encoder attacked')
    .option(
      '--concept-encoder <name>',
      'the encoder whose hidden states of the target are the objective (default: gcg original, ring-a-bell the ' +
        'attacked encoder)',
    )
    .requiredOption('--targets <file>', 'ViSU JSONL (the unsafe captions), I2P-style CSV or a text file of prompts')
    .option(
      '--pairs <file>',
      'ring-a-bell: ViSU JSONL whose caption pairs give the concept vector (default: --targets when it is JSONL)',
    )
    .option('--limit <n>', 'attack this many target rows', intOption('--limit'))
    .option('--skip <n>', 'skip this many target rows first', intOption('--skip'), 0)
    .option('--ban <words>', 'comma-separated words no token of a prompt may contain', ATTACK_DEFAULTS.ban)
    .option(
      '--tokens <k>',
      `adversarial tokens (default: gcg the target's length, ring-a-bell ${RING_A_BELL_DEFAULTS.tokens})`,
      intOption('--tokens'),
    )
    .option(
      '--budget <n>',
      'search steps per target: gcg steps or ring-a-bell generations',
      intOption('--budget'),
      ATTACK_DEFAULTS.budget,
    )
    .option(
      '--batch <n>',
      'candidate prompts scored per step (gcg batch, ring-a-bell population)',
      intOption('--batch'),
      ATTACK_DEFAULTS.batch,
    )
    .option('--eta <x>', 'ring-a-bell: weight of the concept vector', numberOption('--eta'), RING_A_BELL_DEFAULTS.eta)
    .option('--seed <n>', 'search seed', intOption('--seed'), 0)
    .requiredOption('--out <file>', 'attack CSV (resumed if it exists)')
    .action(async (f: Flags) => {
      positive('--budget', f.budget);
      positive('--batch', f.batch);
      positive('--tokens', f.tokens);
      positive('--limit', f.limit);
      if (f.skip < 0) throw new UsageError(`--skip expects a row count of 0 or more, got ${f.skip}`);
      if (f.tokens !== undefined && f.tokens > 75)
        throw new UsageError(`--tokens ${f.tokens}: a CLIP prompt holds at most 75 tokens`);
      if (!existsSync(f.targets)) throw new UsageError(`--targets ${f.targets}: no such file`);
      let manifest: Manifest;
      try {
        manifest = readManifest(f.manifest);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const pipeName = f.pipeline ?? manifest.defaultPipeline;
      const pipeline = manifest.pipelines.find((p) => p.name === pipeName);
      if (!pipeline)
        throw new UsageError(
          `--pipeline ${pipeName}: not in ${manifest.file} (it has ` +
            `${manifest.pipelines.map((p) => p.name).join(', ')})`,
        );
      const encoder = encoderOf(pipeline, f.encoder, '--encoder');
      const conceptName = f.conceptEncoder ?? (f.method === 'gcg' ? 'original' : f.encoder);
      const conceptEncoder = encoderOf(pipeline, conceptName, '--concept-encoder');
      const pairs = f.pairs ?? (f.targets.toLowerCase().endsWith('.jsonl') ? f.targets : undefined);
      if (f.pairs && !existsSync(f.pairs)) throw new UsageError(`--pairs ${f.pairs}: no such file`);
      let targets: AttackTarget[];
      try {
        targets = readTargets(f.targets, f.skip, f.limit);
      } catch (e) {
        throw new UsageError(`--targets ${f.targets}: ${(e as Error).message}`);
      }
      const tokenizerDir = existsSync(join(pipeline.path, 'tokenizer'))
        ? join(pipeline.path, 'tokenizer')
        : encoder.dir;
      const bar = new SingleBar({
        format: 'attack [{bar}] {value}/{total} targets {eta_formatted} | step {step} | similarity {best}',
        hideCursor: true,
        stream: process.stderr,
      });
      let started = false;
      let reached = 0;
      if (!targets.length) throw new UsageError(`--targets ${f.targets}: no prompt in the rows asked for`);
      const ban = f.ban
        .split(',')
        .map((w) => w.trim())
        .filter(Boolean);
      writeProtocol(f.out, {
        method: f.method,
        encoder: encoder.name,
        conceptEncoder: conceptEncoder.name,
        targets: `${f.targets} rows ${f.skip}-${f.skip + Math.max(targets.length, 1) - 1}`,
        budget: f.budget,
        batch: f.batch,
        tokens: f.tokens ?? (f.method === 'gcg' ? 'target length' : RING_A_BELL_DEFAULTS.tokens),
        eta: f.method === 'ring-a-bell' ? f.eta : undefined,
        ban,
        seed: f.seed,
      });
      try {
        const result = await runAttack({
          method: f.method,
          encoder,
          conceptEncoder,
          tokenizer: Tokenizer.load(tokenizerDir),
          targets,
          pairs,
          ban,
          tokens: f.tokens,
          budget: f.budget,
          batch: f.batch,
          eta: f.eta,
          seed: f.seed,
          out: f.out,
          onStart: ({ total, done }) => {
            bar.start(total, done, { step: 0, best: '-' });
            started = true;
          },
          onStep: ({ step, best }) => bar.update({ step, best: best.toFixed(4) }),
          onTarget: ({ done }) => bar.update(done),
        });
        if (started) bar.stop();
        for (const r of result.rows) reached += Number(r.similarity);
        const summary = {
          out: f.out,
          method: f.method,
          encoder: encoder.name,
          conceptEncoder: conceptEncoder.name,
          rows: result.rows.length,
          searched: result.searched,
          meanSimilarity: Number((reached / result.rows.length).toFixed(5)),
          budget: f.budget,
          batch: f.batch,
          ban: f.ban,
        };
        process.stdout.write(`${JSON.stringify(summary)}\n`);
      } catch (e) {
        if (started) bar.stop();
        if (e instanceof AttackInputError) throw new UsageError(e.message);
        throw e;
      }
    });
}
