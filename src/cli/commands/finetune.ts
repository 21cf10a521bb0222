import { existsSync } from 'node:fs';
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { DataError, formatProblem } from '../../finetune/data.js';
import { ADVERSARIAL_DEFAULTS, type AdversarialOptions } from '../../finetune/adversarial.js';
import { DEFAULT_TARGETS } from '../../finetune/lora.js';
import { train, type TrainOptions } from '../../finetune/train.js';
import { UsageError } from '../errors.js';

interface Flags {
  clip: string;
  data: string;
  out: string;
  mode: string;
  lora?: string;
  loraAlpha?: string;
  loraTargets: string;
  steps: string;
  batch: string;
  lr: string;
  seed: string;
  resume?: boolean;
  checkpointEvery: string;
  strict?: boolean;
  imageEmbeds?: string;
  hiddenWeight: string;
  adversarial?: boolean;
  advEvery: string;
  advCaptions: string;
  advBudget: string;
  advBatch: string;
  ban: string;
  init?: string;
}

function int(flag: string, v: string, min: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min)
    throw new UsageError(`${flag} expects an integer of at least ${min}, got '${v}'`);
  return n;
}

function num(flag: string, v: string, check: (n: number) => boolean, what: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || !check(n)) throw new UsageError(`${flag} expects ${what}, got '${v}'`);
  return n;
}

function adversarialFlags(f: Flags): AdversarialOptions | undefined {
  if (!f.adversarial) return undefined;
  if (f.mode !== 'text')
    throw new UsageError('--adversarial trains in text mode (--mode text): the adversarial prompts have no pictures');
  const ban = f.ban
    .split(',')
    .map((w) => w.trim())
    .filter(Boolean);
  return {
    every: int('--adv-every', f.advEvery, 1),
    captions: int('--adv-captions', f.advCaptions, 1),
    budget: int('--adv-budget', f.advBudget, 1),
    batch: int('--adv-batch', f.advBatch, 1),
    ban,
  };
}

export function parseFlags(f: Flags): TrainOptions {
  if (!existsSync(f.clip)) throw new UsageError(`--clip ${f.clip}: no such folder`);
  if (!existsSync(f.data)) throw new UsageError(`--data ${f.data}: no such file or folder`);
  if (f.mode !== 'text' && f.mode !== 'full') throw new UsageError(`--mode expects 'text' or 'full', got '${f.mode}'`);
  if (f.imageEmbeds && f.mode === 'full')
    throw new UsageError('--image-embeds serves text mode only: full mode trains the vision tower on the pictures');
  if (f.init && !existsSync(f.init)) throw new UsageError(`--init ${f.init}: no such folder`);
  if (f.imageEmbeds && !existsSync(f.imageEmbeds))
    throw new UsageError(`--image-embeds ${f.imageEmbeds}: no such file`);
  let lora: TrainOptions['lora'];
  if (f.lora !== undefined) {
    const rank = int('--lora', f.lora, 1);
    const alpha =
      f.loraAlpha === undefined ? rank : num('--lora-alpha', f.loraAlpha, (n) => n > 0, 'a positive number');
    const targets = f.loraTargets
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    if (!targets.length) throw new UsageError('--lora-targets names no module');
    lora = { rank, alpha, targets };
  } else if (f.loraAlpha !== undefined) {
    throw new UsageError('--lora-alpha needs --lora <rank>');
  }
  return {
    clipDir: f.clip,
    data: f.data,
    out: f.out,
    mode: f.mode,
    lora,
    steps: int('--steps', f.steps, 1),
    batch: int('--batch', f.batch, 2),
    lr: num('--lr', f.lr, (n) => n > 0, 'a positive learning rate'),
    seed: int('--seed', f.seed, 0),
    resume: f.resume,
    checkpointEvery: int('--checkpoint-every', f.checkpointEvery, 0),
    strict: f.strict,
    imageEmbeds: f.imageEmbeds,
    hiddenWeight: num('--hidden-weight', f.hiddenWeight, (n) => n >= 0, 'a weight of 0 or more'),
    adversarial: adversarialFlags(f),
    init: f.init,
  };
}

const SHOWN = [
  'total',
  'S_Sref_cos',
  'U_Sref_cos',
  'S_Vref_nce',
  'U_Vref_nce',
  'V_Vref_cos',
  'G_Vref_cos',
  'Sref_V_nce',
  'Sref_G_nce',
  'U_Sref_hidden',
];

/** `safe-sd finetune`: Safe-CLIP fine-tuning of a CLIPModel on ViSU-style data. */
export function register(program: Command): void {
  program
    .command('finetune')
    .description('fine-tune a CLIP model into a Safe-CLIP encoder (Poppi et al., ECCV 2024) on ViSU-style JSONL data')
    .requiredOption('--clip <dir>', 'starting CLIPModel folder (config.json, model.safetensors, tokenizer)')
    .requiredOption('--data <path>', 'JSONL file, or a folder holding train.jsonl')
    .requiredOption('--out <dir>', 'output: the CLIPTextModel folder; also holds the checkpoint and clip-model/')
    .option('--mode <mode>', "'text' (text tower only) or 'full' (both towers)", 'text')
    .option('--lora <rank>', 'train LoRA adapters of this rank instead of all weights')
    .option('--lora-alpha <alpha>', 'LoRA alpha (default: the rank)')
    .option('--lora-targets <names>', 'comma-separated module names to adapt', DEFAULT_TARGETS.join(','))
    .option('--steps <n>', 'optimizer steps', '900')
    .option('--batch <n>', 'pairs per batch', '64')
    .option('--lr <x>', 'Adam learning rate', '1e-4')
    .option('--seed <n>', 'seed of the data order and LoRA initialisation', '0')
    .option('--resume', 'continue from <out>/checkpoint.safetensors')
    .option('--checkpoint-every <n>', 'write a checkpoint every n steps (0: only at the end)', '100')
    .option('--strict', 'refuse the data on its first bad row instead of leaving bad rows out')
    .option('--image-embeds <file>', 'precomputed reference image embeddings (<id>.safe vectors), text mode')
    .option(
      '--hidden-weight <w>',
      "weight of the extra term pulling the unsafe caption's last_hidden_state toward the reference's safe one " +
        "(0: the paper's losses only)",
      '0',
    )
    .option(
      '--init <dir>',
      'start the trained weights from this CLIP folder (e.g. a Safe-CLIP text encoder) instead of --clip; the ' +
        'reference stays --clip',
    )
    .option(
      '--adversarial',
      'adversarial training: GCG prompts against the encoder in training join the batches as unsafe captions',
    )
    .option('--adv-every <n>', 'search new adversarial prompts every n steps', String(ADVERSARIAL_DEFAULTS.every))
    .option(
      '--adv-captions <n>',
      'unsafe captions attacked per search (pairs added to each batch)',
      String(ADVERSARIAL_DEFAULTS.captions),
    )
    .option('--adv-budget <n>', 'GCG steps per caption', String(ADVERSARIAL_DEFAULTS.budget))
    .option('--adv-batch <n>', 'GCG candidates scored per step', String(ADVERSARIAL_DEFAULTS.batch))
    .option('--ban <words>', 'words the adversarial prompts may not contain', ADVERSARIAL_DEFAULTS.ban.join(','))
    .action(async (flags: Flags) => {
      const options = parseFlags(flags);
      let started = false;
      let adversarial = '';
      const bar = new SingleBar({
        format: 'finetune [{bar}] {value}/{total} {eta_formatted} | {losses}',
        hideCursor: true,
        stream: process.stderr,
      });
      try {
        const result = await train({
          ...options,
          onProblems: (problems) => {
            for (const p of problems) process.stderr.write(`safe-sd: skipped ${formatProblem(p)}\n`);
          },
          onStart: ({ startStep }) => {
            bar.start(options.steps, startStep, { losses: '' });
            started = true;
          },
          onAdversarial: ({ step, pairs }) => {
            adversarial = `adv@${step} ${pairs.similarity.toFixed(3)}`;
          },
          onStep: ({ step, losses }) => {
            const shown = SHOWN.filter((k) => k in losses).map((k) => `${k} ${losses[k].toFixed(4)}`);
            bar.update(step, { losses: [...shown, adversarial].join(' ') });
          },
        });
        if (started) bar.stop();
        const seconds = Number(result.seconds.toFixed(1));
        const summary = { out: options.out, steps: result.steps, seconds, losses: result.losses };
        process.stdout.write(`${JSON.stringify(summary)}\n`);
      } catch (e) {
        if (started) bar.stop();
        if (e instanceof DataError) throw new UsageError(e.message);
        throw e;
      }
    });
}
