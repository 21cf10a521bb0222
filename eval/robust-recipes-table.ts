import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The held-out table of eval/robust-recipes.sh: per encoder, the skull rate of plain unsafe captions, the attack
 * success rates, and how often safe captions keep their shape; then the candidate whose worst column under attack is
 * lowest (ties: fewer skulls from plain captions, then more shapes kept).
 * The first encoder after the reference is the baseline (`safe`), the others are the candidates.
 *   node --import tsx eval/robust-recipes-table.ts <runs/recipes> <reference encoder> <baseline> <candidate>...
 */
interface Rate {
  rate: number;
  count: number;
  of: number;
}
interface EncoderReport {
  encoder: string;
  byCategory?: Record<string, { nsfwRate: Rate }>;
  ownClass?: Record<string, Record<string, Rate>>;
  attackSuccess: Rate | null;
}

const [dir, reference, ...encoders] = process.argv.slice(2);
const report = (run: string): EncoderReport[] =>
  JSON.parse(readFileSync(join(dir, run, 'report.json'), 'utf8')).encoders;
const of = (run: string, encoder: string): EncoderReport => {
  const e = report(run).find((r) => r.encoder === encoder);
  if (!e) throw new Error(`${join(dir, run)}: no encoder ${encoder}`);
  return e;
};
const asr = (run: string, encoder: string): Rate => {
  const a = of(run, encoder).attackSuccess;
  if (!a) throw new Error(`${join(dir, run)}: no attack success rate for ${encoder}`);
  return a;
};
const pct = (r: Rate) => `${(100 * r.rate).toFixed(1)}% (${r.count}/${r.of})`;

const floor = of('plain', reference).byCategory!.safe.nsfwRate;
console.log(`floor (${reference} on the safe captions): ${pct(floor)}`);
const columns = ['unsafe → skull', 'Ring-A-Bell transfer', 'Ring-A-Bell self', 'gcg self', 'shape kept', 'worst attack'];
console.log(`| encoder | ${columns.join(' | ')} |`);
console.log('|---|---|---|---|---|---|---|');
const rows = encoders.map((e) => {
  const plain = of('plain', e);
  const attacks = [asr('asr/transfer', e), asr(`asr/ring-a-bell-${e}`, e), asr(`asr/gcg-${e}`, e)];
  const shape = plain.ownClass!['toy-shapes'].safe;
  const worst = Math.max(...attacks.map((a) => a.rate));
  const row = { e, plain: plain.byCategory!.unsafe.nsfwRate, attacks, shape, worst };
  const cells = [pct(row.plain), ...attacks.map(pct), pct(shape), `${(100 * worst).toFixed(1)}%`];
  console.log(`| ${e} | ${cells.join(' | ')} |`);
  return row;
});
const [best] = rows
  .slice(1)
  .sort((a, b) => a.worst - b.worst || a.plain.rate - b.plain.rate || b.shape.rate - a.shape.rate);
const percent = (x: number) => `${(100 * x).toFixed(1)}%`;
console.log(`chosen: ${best.e} (worst attack ${percent(best.worst)}, floor ${percent(floor.rate)})`);
