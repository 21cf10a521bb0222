/**
 * Child process of the toy benchmark (section f): the time from process start to the first image of the default
 * pipeline, then the median time of `more` further images. The caller sets SAFE_SD_CACHE (empty = cold).
 *   first-image.ts <manifest> <more> <provider>
 */
import { createEngine, type LocalEngine } from '../../pipeline/engine.js';
import { providerSettings, type Provider } from '../../onnx/session.js';
import { median } from '../measure.js';

const [manifest, moreArg, provider] = process.argv.slice(2);
const engine = (await createEngine({ manifest, session: providerSettings(provider as Provider) })) as LocalEngine;
const request = engine.resolve({ prompt: 'a red circle on a blue square', seed: 7n });
await engine.generate(request);
// performance.now() counts from the start of this process.
const firstImageMs = performance.now();
const times: number[] = [];
for (let i = 0; i < Number(moreArg); i++) {
  const t = performance.now();
  await engine.generate({ ...request, seed: BigInt(8 + i) });
  times.push(performance.now() - t);
}
await engine.close();
console.log(JSON.stringify({ firstImageMs, perImageMs: times.length ? median(times) : undefined }));
