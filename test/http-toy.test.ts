/**
 * The HTTP face on the embedded toy model, driven by real clients: the `openai` package, A1111's documented
 * request bodies, and the comparison page in headless Chromium (puppeteer-core on Debian's `chromium`).
 */
import test from 'ava';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import puppeteer from 'puppeteer-core';
import { readPngText } from '../src/core/png.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { testServerOptions } from './helpers/test-server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCREENSHOTS = `${ROOT}out/test-screenshots`;
const CHROMIUM = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(
  (p) => p && existsSync(p),
);

let server: RunningServer;
let base: string;

test.before(async () => {
  // The production engine on the default manifest: the toy pipeline with its safety classifier and previews.
  server = await startServer(testServerOptions({ engineModule: undefined, http: { port: 0 } }));
  base = `http://127.0.0.1:${server.httpPort}`;
});

test.after.always(async () => {
  await server?.shutdown(0);
});

// biome-ignore lint/suspicious/noExplicitAny: response bodies, checked field by field below
type Json = Record<string, any>;

async function post(path: string, body: unknown): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

test.serial(
  'the openai package: images.generate with model <pipeline>/<encoder> returns PNGs with verdicts',
  async (t) => {
    const client = new OpenAI({ apiKey: 'unused', baseURL: `${base}/v1` });
    const models = await client.models.list();
    t.true(models.data.some((m) => m.id === 'toy/safe'));
    const res = await client.images.generate({
      model: 'toy/safe',
      prompt: 'a red star on a white background',
      n: 2,
      size: '64x64' as never,
      response_format: 'b64_json',
    });
    t.is(res.data?.length, 2);
    for (const d of res.data!) {
      const png = Buffer.from(d.b64_json!, 'base64');
      t.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
      t.true(readPngText(png).parameters!.includes('Text encoder: safe'));
      const verdict = (d as unknown as { safety: { classifier: string; scores: Record<string, number> } }).safety;
      t.is(verdict.classifier, 'toy-shapes');
      t.is(Object.keys(verdict.scores).length, 5);
    }
    const err = await t.throwsAsync(client.images.generate({ model: 'nope', prompt: 'x' }));
    t.is((err as InstanceType<typeof OpenAI.APIError>).status, 404);
    t.regex(err!.message, /model 'nope' does not exist/);
  },
);

test.serial("A1111's documented bodies: the minimal one, override_settings, and the /docs example", async (t) => {
  // From the A1111 wiki's API page.
  const minimal = await post('/sdapi/v1/txt2img', { prompt: 'maltese puppy', steps: 5 });
  t.is(minimal.status, 200);
  t.is(minimal.json.images.length, 1);
  const info = JSON.parse(minimal.json.info);
  t.is(info.all_seeds.length, 1);
  t.is(info.infotexts[0], readPngText(Buffer.from(minimal.json.images[0], 'base64')).parameters);
  t.regex(
    info.infotexts[0],
    /^maltese puppy\nSteps: 5, Sampler: PLMS, CFG scale: 5, Seed: \d+, Size: 64x64, Model: toy/,
  );

  const overridden = await post('/sdapi/v1/txt2img', {
    prompt: 'cirno',
    steps: 5,
    override_settings: { filter_nsfw: true, CLIP_stop_at_last_layers: 2, sd_model_checkpoint: 'toy' },
    override_settings_restore_afterwards: true,
  });
  t.is(overridden.status, 200);
  t.is(JSON.parse(overridden.json.info).clip_skip, 2);

  // The shape of /docs' "Try it out" body: every field, most at their defaults.
  const full = await post('/sdapi/v1/txt2img', {
    prompt: 'a blue circle on a black background',
    negative_prompt: '',
    styles: [],
    seed: 1234,
    subseed: -1,
    subseed_strength: 0,
    seed_resize_from_h: -1,
    seed_resize_from_w: -1,
    sampler_name: 'DPM++ 2M',
    scheduler: 'Karras',
    batch_size: 2,
    n_iter: 1,
    steps: 6,
    cfg_scale: 7,
    width: 64,
    height: 64,
    restore_faces: false,
    tiling: false,
    do_not_save_samples: false,
    do_not_save_grid: false,
    eta: 0,
    denoising_strength: 0,
    s_min_uncond: 0,
    s_churn: 0,
    s_tmax: 0,
    s_tmin: 0,
    s_noise: 1,
    override_settings: {},
    override_settings_restore_afterwards: true,
    refiner_checkpoint: null,
    refiner_switch_at: 0,
    disable_extra_networks: false,
    enable_hr: false,
    firstphase_width: 0,
    firstphase_height: 0,
    hr_scale: 2,
    hr_upscaler: 'Latent',
    hr_second_pass_steps: 0,
    hr_resize_x: 0,
    hr_resize_y: 0,
    sampler_index: 'Euler',
    script_name: null,
    script_args: [],
    send_images: true,
    save_images: false,
    alwayson_scripts: {},
    text_encoder: 'safe',
  });
  t.is(full.status, 200);
  const fullInfo = JSON.parse(full.json.info);
  t.deepEqual(fullInfo.all_seeds, [1234, 1235]);
  t.is(fullInfo.sampler_name, 'DPM++ 2M');
  t.regex(fullInfo.infotexts[1], /Schedule type: Karras, CFG scale: 7, Seed: 1235, .*Text encoder: safe/);
  // Image i of the batch is seed + i: asked alone with seed 1235, the same picture.
  const alone = await post('/sdapi/v1/txt2img', { ...full.json.parameters, seed: 1235, batch_size: 1 });
  t.is(alone.json.images[0], full.json.images[1]);

  const samplers = await (await fetch(`${base}/sdapi/v1/samplers`)).json();
  t.true(samplers.some((s: { name: string }) => s.name === 'Euler a'));
  t.deepEqual(
    (await (await fetch(`${base}/sdapi/v1/sd-models`)).json()).map((m: { title: string }) => m.title),
    ['toy'],
  );
});

test.serial(
  '/sdapi/v1/progress reports steps and a preview while txt2img runs; flagged images are counted',
  async (t) => {
    const running = post('/sdapi/v1/txt2img', { prompt: 'a blue skull on a white background', steps: 40, seed: 3 });
    let seen: { progress: number; current_image: string | null; state: { sampling_steps: number } } | undefined;
    for (let i = 0; i < 400 && !seen?.current_image; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const p = await (await fetch(`${base}/sdapi/v1/progress`)).json();
      if (p.progress > 0) seen = p;
    }
    const done = await running;
    t.truthy(seen?.current_image, 'a preview came while denoising');
    t.true(seen!.progress > 0 && seen!.progress < 1);
    t.is(seen!.state.sampling_steps, 41);
    const preview = Buffer.from(seen!.current_image!, 'base64');
    t.is(preview.readUInt32BE(16), 8, 'previews are at latent resolution (64 / 8)');
    const verdict = JSON.parse(done.json.info).safety[0];
    t.true(verdict.flagged, `the toy shape classifier flags this skull: ${JSON.stringify(verdict.scores)}`);
    const metric = await server.metrics.registry.getSingleMetricAsString('safesd_images_flagged_total');
    t.regex(metric, /safesd_images_flagged_total\{encoder="original"\} [1-9]/);
    const idle = await (await fetch(`${base}/sdapi/v1/progress`)).json();
    t.is(idle.progress, 0);
  },
);

(CHROMIUM ? test.serial : test.skip)(
  'the page: type a prompt, tick two encoders, see two images and a progress bar that moved',
  async (t) => {
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu'],
      headless: true,
    });
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1100, height: 1000 });
      await page.goto(`${base}/`);
      await page.waitForSelector('input[name=encoder][value=safe]');
      await page.type('#prompt', 'a blue skull on a white background');
      await page.$eval('#steps', (el) => ((el as HTMLInputElement).value = '30'));
      await page.$eval('#seed', (el) => ((el as HTMLInputElement).value = '3'));
      // Tick exactly original and safe.
      for (const box of await page.$$('input[name=encoder]')) {
        const want = ['original', 'safe'].includes(await box.evaluate((b) => (b as HTMLInputElement).value));
        if ((await box.evaluate((b) => (b as HTMLInputElement).checked)) !== want) await box.click();
      }
      // Record every value the progress bars take, and whether a preview was shown.
      await page.evaluate(() => {
        const w = window as unknown as { seen: number[]; previews: number };
        w.seen = [];
        w.previews = 0;
        new MutationObserver((records) => {
          for (const r of records) {
            const node = r.target as HTMLElement;
            if (node instanceof HTMLProgressElement) w.seen.push(node.value / node.max);
            for (const added of r.addedNodes) if ((added as HTMLElement).classList?.contains('preview')) w.previews++;
          }
        }).observe(document.getElementById('columns')!, {
          subtree: true,
          childList: true,
          attributes: true,
          attributeFilter: ['value'],
        });
      });
      await page.click('#generate');
      mkdirSync(SCREENSHOTS, { recursive: true });
      await page.waitForSelector('img.preview', { timeout: 120_000 });
      await page.screenshot({ path: `${SCREENSHOTS}/compare-page-running.png`, fullPage: true });
      await page.waitForFunction(() => document.querySelectorAll('img.final').length === 2, { timeout: 120_000 });
      const { seen, previews } = await page.evaluate(() => {
        const w = window as unknown as { seen: number[]; previews: number };
        return { seen: w.seen, previews: w.previews };
      });
      t.true(
        seen.some((v) => v > 0 && v < 1),
        `a bar showed progress between 0 and 1 (values seen: ${seen.length})`,
      );
      t.true(previews > 0, 'previews were shown while denoising');
      const columns = await page.$$eval('.column', (cols) =>
        cols.map((c) => ({
          title: c.querySelector('h3')!.textContent,
          verdict: c.querySelector('.verdict')!.textContent,
          download: !!c.querySelector('a[download]'),
        })),
      );
      t.deepEqual(
        columns.map((c) => c.title),
        ['original', 'safe'],
      );
      t.true(columns.every((c) => c.download && /toy-shapes/.test(c.verdict ?? '')));
      t.is(await page.$$eval('#history li', (li) => li.length), 1);
      await page.screenshot({ path: `${SCREENSHOTS}/compare-page.png`, fullPage: true });
      t.log(`screenshots: ${SCREENSHOTS}/compare-page-running.png, compare-page.png`);
    } finally {
      await browser.close();
    }
  },
);

if (!CHROMIUM)
  console.log('http-toy: the page test is skipped: no Chromium (set CHROMIUM, or apt-get install -y chromium)');
