import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { Tokenizer } from '../../pipeline/tokenizer.js';

/** `safe-sd tokenize --tokenizer <dir> <text>`: the ids a prompt gives the text encoder, as one JSON line. */
export function register(program: Command): void {
  program
    .command('tokenize')
    .description('print the CLIP input ids (padded/truncated to model_max_length) of a prompt')
    .requiredOption('--tokenizer <dir>', 'tokenizer folder (tokenizer.json, or vocab.json + merges.txt)')
    .argument('<text>', 'the prompt')
    .action((text: string, opts: { tokenizer: string }) => {
      if (!existsSync(opts.tokenizer)) throw new UsageError(`--tokenizer ${opts.tokenizer}: no such folder`);
      const encoded = Tokenizer.load(opts.tokenizer).encode(text);
      if (encoded.truncated) {
        process.stderr.write(
          `safe-sd: the prompt is longer than ${encoded.inputIds.length} tokens; this part was removed: ` +
            `${encoded.removedText}\n`,
        );
      }
      process.stdout.write(`${JSON.stringify({ input_ids: encoded.inputIds })}\n`);
    });
}
