/** `npm run bench [-- options]`: exactly `safe-sd bench [options]`. */
import { Command } from 'commander';
import { register } from '../cli/commands/bench.js';
import { exitWithError } from '../cli/errors.js';

const program = new Command('safe-sd');
register(program);
try {
  await program.parseAsync([process.argv[0], process.argv[1], 'bench', ...process.argv.slice(2)]);
} catch (e) {
  exitWithError(e);
}
