import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AdversarialPairs } from '../src/finetune/adversarial.js';
import { train, type TrainOptions } from '../src/finetune/train.js';
import { loadClip } from '../src/models/clip-loader.js';
import { weightsPath } from './fixtures.js';

const TOY = new URL('../eval/toy-visu/', import.meta.url).pathname;

function smallData(dir: string, n: number): string {
  const rows = readFileSync(join(TOY, 'train.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .slice(0, n)
    .map((l) => {
      const r = JSON.parse(l);
      return JSON.stringify({ ...r, safe_image: join(TOY, r.safe_image), nsfw_image: join(TOY, r.nsfw_image) });
    });
  const file = join(dir, 'train.jsonl');
  writeFileSync(file, `${rows.join('\n')}\n`);
  return file;
}

// The prompts are searched against the encoder in training.
test('adversarial training searches prompts without banned words and trains on them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'safe-sd-adv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const data = smallData(dir, 8);
  const searches: Array<{ step: number; pairs: AdversarialPairs }> = [];
  const o: TrainOptions = {
    clipDir: weightsPath('toy-clip'),
    init: weightsPath('toy-safe-clip'),
    data,
    out: join(dir, 'out'),
    mode: 'text',
    steps: 3,
    batch: 4,
    lr: 1e-3,
    seed: 1,
    checkpointEvery: 0,
    hiddenWeight: 3,
    adversarial: { every: 2, captions: 2, budget: 1, batch: 4, ban: ['skull', 'skulls'] },
    onAdversarial: (a) => searches.push(a),
  };
  const r = await train(o);
  t.is(r.steps, 3);
  t.deepEqual(
    searches.map((s) => s.step),
    [0, 2],
  );
  for (const { pairs } of searches) {
    t.is(pairs.prompts.length, 2);
    t.true(
      pairs.prompts.every((p) => p.length > 0 && !/skull/i.test(p)),
      pairs.prompts.join(' | '),
    );
    t.true(pairs.similarity > 0 && pairs.similarity <= 1);
  }
  t.true(Number.isFinite(r.losses.total));
  // --init: training started from the Safe-CLIP encoder, not from the CLIPModel's own text tower.
  const init = loadClip(weightsPath('toy-safe-clip'));
  const key = 'text_model.final_layer_norm.bias';
  const before = init.weights.get(key).data;
  init.weights.close();
  const after = r.params.get(key)!.data;
  let drift = 0;
  for (let i = 0; i < before.length; i++) drift = Math.max(drift, Math.abs(after[i] - before[i]));
  t.log(`largest change of ${key} from the --init weights after 3 steps: ${drift.toExponential(2)}`);
  t.true(drift < 0.01);
});
