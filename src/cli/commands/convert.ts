import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { convertPipeline } from '../../models/convert.js';
import { UsageError } from '../errors.js';

/** `safe-sd convert <checkpoint dir> <out dir>`: ONNX graphs of a diffusers pipeline folder, and their manifest. */
export function register(program: Command): void {
  program
    .command('convert')
    .description('write the ONNX graphs (text encoder, UNet, VAE encoder/decoder) of a diffusers pipeline folder')
    .argument('<checkpoint>', 'diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, ...)')
    .argument('<out>', 'output folder')
    .option('--json', 'print the conversion manifest as JSON')
    .action((checkpoint: string, out: string, o: { json?: boolean }) => {
      if (!existsSync(checkpoint)) throw new UsageError(`${checkpoint}: no such folder`);
      const manifest = convertPipeline(checkpoint, out, (line) => process.stderr.write(`safe-sd: ${line}\n`));
      if (o.json) process.stdout.write(`${JSON.stringify(manifest)}\n`);
    });
}
