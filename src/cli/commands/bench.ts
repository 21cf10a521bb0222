/** `safe-sd bench`: throughput, overhead and memory figures measured on this machine (see docs/benchmarks.md). */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { addBenchOptions, printReport, runBench, type BenchOptions } from '../../bench/run.js';

export function register(program: Command): void {
  addBenchOptions(program.command('bench').description('benchmark this machine: reference GEMM/conv, SD 1.5 UNet, pipeline overhead, batching, memory, first image'))
    .action(async (o: Omit<BenchOptions, 'log'>) => {
      const report = await runBench({ ...o, manifest: resolve(o.manifest), log: (l) => process.stderr.write(`${l}\n`) });
      printReport(report, !!o.json);
      // The server section leaves gRPC and worker handles that would keep the process alive a while.
      process.exit(0);
    });
}
