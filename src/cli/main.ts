import { Command, CommanderError } from 'commander';
import { exitWithError } from './errors.js';
import { register as attack } from './commands/attack.js';
import { register as bench } from './commands/bench.js';
import { register as client } from './commands/client.js';
import { register as convert } from './commands/convert.js';
import { register as evaluate } from './commands/eval.js';
import { register as evalRetrieval } from './commands/eval-retrieval.js';
import { register as fid } from './commands/fid.js';
import { register as finetune } from './commands/finetune.js';
import { register as generate } from './commands/generate.js';
import { register as inspect } from './commands/inspect.js';
import { register as serve } from './commands/serve.js';
import { register as tokenize } from './commands/tokenize.js';

const program = new Command('safe-sd')
  .description('Stable Diffusion on ONNX Runtime with swappable (Safe-CLIP) text encoders')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

// Each command lives in its own module under ./commands and registers itself here.
const commands: Array<(p: Command) => void> = [
  serve,
  client,
  generate,
  convert,
  finetune,
  evaluate,
  evalRetrieval,
  fid,
  inspect,
  tokenize,
  attack,
  bench,
];
for (const register of commands) register(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  exitWithError(e);
}
