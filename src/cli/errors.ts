import { InputError } from '../core/errors.js';

/** Bad command-line input: printed as one line, exit code 2. */
export class UsageError extends InputError {
  override name = 'UsageError';
}

/** Print an error as one readable line and exit: 2 for bad input (usage, files, requests), 1 for everything else. */
export function exitWithError(e: unknown): never {
  const msg = e instanceof Error ? e.message : String(e);
  process.stderr.write(`safe-sd: ${msg.split('\n')[0]}\n`);
  if (process.env.SAFE_SD_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  process.exit(e instanceof InputError ? 2 : 1);
}
