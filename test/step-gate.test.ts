import test from 'ava';
import { StepGate } from '../src/serving/step-gate.js';

/** Two batches stepping through one gate; records the order their steps ran in. */
async function run(gate: StepGate, batch: number, steps: number, pixels: number, log: string[]) {
  for (let s = 0; s < steps; s++) {
    await gate.turn(batch, (steps - s) * pixels);
    log.push(`${batch}:${s}`);
  }
  gate.release(batch);
}

test('the batch with the least work left steps first; the long one resumes after it', async (t) => {
  const gate = new StepGate();
  const log: string[] = [];
  const long = run(gate, 1, 6, 100, log);
  // Let the long batch take two steps, then start a short one.
  while (log.length < 2) await new Promise((r) => setImmediate(r));
  const short = run(gate, 2, 3, 100, log);
  await Promise.all([long, short]);
  const firstShort = log.indexOf('2:0');
  t.deepEqual(log.slice(firstShort, firstShort + 3), ['2:0', '2:1', '2:2'], log.join(' '));
  t.true(firstShort <= 3, `the short batch waited for at most one step of the long one: ${log.join(' ')}`);
  t.is(log.length, 9);
});
