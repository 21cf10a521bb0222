import type { Command } from 'commander';
import { SafetensorsError, SafetensorsFile } from '../../core/safetensors.js';
import { featureStats, frechetDistance } from '../../eval/fid.js';
import { UsageError } from '../errors.js';

/** `<file.safetensors>:<tensor>` → the [N, D] feature matrix, as float32. */
function readFeatures(spec: string, flag: string) {
  const at = spec.lastIndexOf(':');
  if (at <= 0 || at === spec.length - 1) throw new UsageError(`${flag} ${spec}: expected <file.safetensors>:<tensor>`);
  const path = spec.slice(0, at);
  const name = spec.slice(at + 1);
  let f: SafetensorsFile;
  try {
    f = SafetensorsFile.open(path);
  } catch (e) {
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
  try {
    if (!f.has(name))
      throw new UsageError(
        `${flag}: ${path} has no tensor ${name} (it has ` +
          `${f.names.slice(0, 8).join(', ')}${f.names.length > 8 ? ', …' : ''})`,
      );
    const t = f.readF32(name);
    if (t.shape.length !== 2 || t.shape[0] < 2)
      throw new UsageError(`${flag}: ${path} [${name}] is [${t.shape}], expected [N, D] features with N ≥ 2`);
    return t;
  } catch (e) {
    if (e instanceof SafetensorsError) throw new UsageError(`${flag}: ${e.message}`);
    throw e;
  } finally {
    f.close();
  }
}

export function register(program: Command): void {
  program
    .command('fid')
    .description('Fréchet distance between two feature sets (pytorch-fid numerics), printed as JSON')
    .requiredOption('--a <file:tensor>', 'first [N, D] feature matrix, e.g. real.safetensors:features')
    .requiredOption('--b <file:tensor>', 'second [N, D] feature matrix')
    .action(async (opts: { a: string; b: string }) => {
      const a = readFeatures(opts.a, '--a');
      const b = readFeatures(opts.b, '--b');
      if (a.shape[1] !== b.shape[1])
        throw new UsageError(`feature dimensions differ: --a has D=${a.shape[1]}, --b has D=${b.shape[1]}`);
      const [sa, sb] = [
        await featureStats(a.data, a.shape[0], a.shape[1]),
        await featureStats(b.data, b.shape[0], b.shape[1]),
      ];
      process.stdout.write(`${JSON.stringify({ fid: await frechetDistance(sa, sb) })}\n`);
    });
}
