import { existsSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Command } from 'commander';
import { readGallery } from '../../datasets/visu-gallery.js';
import { KS, type AtK } from '../../eval/retrieval-metrics.js';
import { runRetrieval } from '../../eval/retrieval.js';
import { defaultClipDir } from '../../eval/run.js';
import { DEFAULT_MANIFEST, readManifest } from '../../pipeline/manifest.js';
import { UsageError } from '../errors.js';
import { intOption } from '../options.js';

interface RetrievalCliOptions {
  prompts?: string;
  gallery?: string;
  pipeline?: string;
  manifest?: string;
  encoders: string;
  clip?: string;
  limit?: number;
  skip?: number;
  examples: number;
  out: string;
}

export function register(program: Command): void {
  program
    .command('eval-retrieval')
    .description(
      "Safe-CLIP's retrieval experiment: each encoder's text tower against a CLIPModel's vision tower " +
        'on a ViSU gallery; writes report.json and report.html',
    )
    .option(
      '--prompts <file>',
      'ViSU JSONL gallery: safe, nsfw, safe_image, nsfw_image (pictures relative to the file)',
    )
    .option('--gallery <file>', 'the same as --prompts')
    .option('--pipeline <name>', 'pipeline in the manifest whose encoders are named')
    .option('--manifest <file>', 'pipeline manifest')
    .requiredOption('--encoders <a,b,...>', 'encoders to compare, names from the manifest, e.g. original,safe')
    .option('--clip <dir>', "CLIPModel folder with the vision tower (default: the pipeline world's)")
    .option('--limit <n>', 'only the first n rows of the gallery file (after --skip)', intOption('--limit'))
    .option('--skip <n>', 'leave out the first n rows', intOption('--skip'))
    .option(
      '--examples <n>',
      'unsafe captions shown with what they retrieve in report.html',
      intOption('--examples'),
      12,
    )
    .requiredOption('--out <dir>', 'report folder')
    .action(async (o: RetrievalCliOptions) => {
      if (o.prompts && o.gallery && o.prompts !== o.gallery)
        throw new UsageError('--prompts and --gallery name two files: give one');
      const file = o.prompts ?? o.gallery;
      if (!file) throw new UsageError('--prompts <file> (or --gallery <file>) is required');
      if (!existsSync(file) || !statSync(file).isFile()) throw new UsageError(`--prompts ${file}: no such file`);
      if (o.examples < 0) throw new UsageError(`--examples expects 0 or more, got ${o.examples}`);
      let set: ReturnType<typeof readGallery>;
      try {
        set = readGallery(file, o.limit, o.skip);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      for (const p of set.problems) process.stderr.write(`safe-sd: ${file}:${p.line}: skipped: ${p.message}\n`);
      if (set.rows.length === 0) throw new UsageError(`${file}: no gallery row with both captions and both pictures`);

      const manifestFile = o.manifest ?? DEFAULT_MANIFEST;
      if (!existsSync(manifestFile)) throw new UsageError(`--manifest ${manifestFile}: no such file`);
      const manifest = readManifest(manifestFile);
      const want = o.pipeline ?? manifest.defaultPipeline;
      const pipeline = manifest.pipelines.find((p) => p.name === want);
      if (!pipeline)
        throw new UsageError(
          `--pipeline ${want}: not in ${manifestFile} (it has ${manifest.pipelines.map((p) => p.name).join(', ')})`,
        );
      const names = o.encoders
        .split(',')
        .map((e) => e.trim())
        .filter(Boolean);
      if (names.length === 0) throw new UsageError('--encoders names no encoder');
      const encoders = names.map((name) => {
        const e = pipeline.encoders.find((x) => x.name === name);
        if (!e)
          throw new UsageError(
            `--encoders: pipeline '${pipeline.name}' has no encoder '${name}' ` +
              `(it has ${pipeline.encoders.map((x) => x.name).join(', ')})`,
          );
        if (!statSync(e.path).isDirectory() || existsSync(join(e.path, 'model.onnx'))) {
          throw new UsageError(
            `--encoders: '${name}' (${e.source}) is not a CLIP folder; retrieval needs the text tower's weights`,
          );
        }
        return { name, path: relative(process.cwd(), e.path) || '.' };
      });
      const clipDir = o.clip ?? defaultClipDir(pipeline);
      if (!clipDir) throw new UsageError(`pipeline '${pipeline.name}' has no CLIPModel beside it: give --clip <dir>`);
      if (!existsSync(join(clipDir, 'config.json')))
        throw new UsageError(`--clip ${clipDir}: no config.json (expected a CLIPModel folder)`);

      const report = await runRetrieval({
        gallery: set.rows,
        source: file,
        encoders,
        clipDir: relative(process.cwd(), clipDir) || '.',
        out: o.out,
        examples: o.examples,
        onWarning: (m) => process.stderr.write(`safe-sd: warning: ${m}\n`),
      });
      const fmt = (x: AtK) => KS.map((k) => `${(100 * x[k]).toFixed(1)}`).join('/');
      for (const e of report.encoders) {
        const t = e.textToImage;
        const i = e.imageToText;
        process.stderr.write(
          `safe-sd: ${e.encoder}: text->image safe R@1/5/10 ${fmt(t.safeRecall)}, ` +
            `unsafe share@1/5/10 ${fmt(t.unsafeShare)}; ` +
            `image->text safe R@1/5/10 ${fmt(i.safeRecall)}, unsafe share@1/5/10 ${fmt(i.unsafeShare)} (%)\n`,
        );
      }
      process.stderr.write(`safe-sd: wrote ${join(o.out, 'report.json')} and ${join(o.out, 'report.html')}\n`);
    });
}
