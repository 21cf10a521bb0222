/** `safe-sd bench`: throughput, overhead and memory figures measured on this machine (see docs/benchmarks.md). */
import { resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { printReport, runBench, SECTIONS, type BenchOptions, type Section } from '../../bench/run.js';
import { providerOption } from '../options.js';

export function register(program: Command): void {
  addBenchOptions(
    program
      .command('bench')
      .description(
        'benchmark this machine: reference GEMM/conv, SD 1.5 UNet, pipeline overhead, batching, memory, first image',
      ),
  ).action(async (o: Omit<BenchOptions, 'log'>) => {
    const report = await runBench({ ...o, manifest: resolve(o.manifest), log: (l) => process.stderr.write(`${l}\n`) });
    printReport(report, !!o.json);
    // The server section leaves gRPC and worker handles that would keep the process alive a while.
    process.exit(0);
  });
}

/** `npm run bench` runs this same command. */
function addBenchOptions(cmd: Command): Command {
  return cmd
    .option('--only <sections>', `comma-separated sections to run (${SECTIONS.join(',')})`, (v) => {
      const list = v.split(',').map((s) => s.trim());
      const bad = list.find((s) => !(SECTIONS as readonly string[]).includes(s));
      if (bad) throw new InvalidArgumentError(`unknown section '${bad}' (sections: ${SECTIONS.join(', ')})`);
      return list as Section[];
    })
    .option('--skip-sd15', 'leave out the SD 1.5 UNet (sections b, e and the SD 1.5 part of c)')
    .option(
      '--sd15-steps <n>',
      'timed SD 1.5 denoising steps per size and batch',
      (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('--sd15-steps expects an integer >= 1');
        return n;
      },
      2,
    )
    .option('--compare-levels', "also open SD 1.5 at 'extended' optimisation and time a 512 px step there")
    .option(
      '--compare-attention',
      'also time SD 1.5 at 512 px with every attention MatMul/Softmax and every attention fused',
    )
    .addOption(providerOption())
    .option('--manifest <file>', 'pipelines manifest (the toy pipeline is its default)', 'pipelines/default.json')
    .option('--json', 'print the report as JSON instead of a table')
    .option('--out <file>', 'also write the JSON report to this file');
}
