/** `safe-sd client`: talk to a running `safe-sd serve` (generate, compare, list models). */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import cliProgress from 'cli-progress';
import { type Command, InvalidArgumentError } from 'commander';
import {
  createDiffusionClient,
  type CompareEventMsg,
  type DiffusionClient,
  type GenerateEventMsg,
  type GenerateRequestMsg,
  type ImageMsg,
  type ListModelsResponseMsg,
} from '../../grpc/proto.js';
import { balancedChannelOptions, channelTarget } from '../../grpc/targets.js';
import { UsageError } from '../errors.js';
import { intOption } from './serve.js';

interface ConnectionOpts {
  server: string;
  token?: string;
  tls?: boolean;
  ca?: string;
  timeout?: number;
}

function connection(cmd: Command): Command {
  return cmd
    .option(
      '--server <target>',
      'host:port, a list of IP:port (round-robin), or dns:///name:port (round-robin over its addresses)',
      '127.0.0.1:50051',
    )
    .option('--token <token>', 'bearer token (default: env SAFE_SD_TOKEN)')
    .option('--tls', 'connect with TLS')
    .option('--ca <file>', 'PEM root certificate to trust (implies --tls)')
    .option('--timeout <seconds>', 'deadline for the call', intOption(1));
}

function generationOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--prompt <text>', 'prompt')
    .option('--negative-prompt <text>', 'negative prompt', '')
    .option('--pipeline <name>', "pipeline (default: the server's)")
    .option('--seed <n>', 'seed (default: random; the one used is in the file names)', (v) => {
      if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected a non-negative integer');
      return v;
    })
    .option('--steps <n>', 'denoising steps', intOption(1))
    .option('--guidance <x>', 'guidance scale', (v) => {
      const x = Number(v);
      if (!Number.isFinite(x)) throw new InvalidArgumentError('expected a number');
      return x;
    })
    .option('--width <n>', 'width (multiple of 8)', intOption(8))
    .option('--height <n>', 'height (multiple of 8)', intOption(8))
    .option('--scheduler <name>', "scheduler (default: the pipeline's)")
    .option('--num-images <n>', 'images per encoder', intOption(1))
    .option('--clip-skip <n>', '2 = penultimate CLIP layer', intOption(0))
    .requiredOption('--out <dir>', 'folder for the PNGs');
}

function connect(o: ConnectionOpts): { client: DiffusionClient; metadata: grpc.Metadata; options: grpc.CallOptions } {
  const creds =
    o.tls || o.ca ? grpc.credentials.createSsl(o.ca ? readFileSync(o.ca) : null) : grpc.credentials.createInsecure();
  let target: string;
  try {
    target = channelTarget(o.server);
  } catch (e) {
    throw new UsageError(`--server: ${(e as Error).message}`);
  }
  const client = createDiffusionClient(target, creds, balancedChannelOptions());
  const metadata = new grpc.Metadata();
  const token = o.token ?? process.env.SAFE_SD_TOKEN;
  if (token) metadata.set('authorization', `Bearer ${token}`);
  const options: grpc.CallOptions = o.timeout ? { deadline: Date.now() + o.timeout * 1000 } : {};
  return { client, metadata, options };
}

function requestFields(o: Record<string, unknown>): Omit<GenerateRequestMsg, 'encoder' | '_seed' | '_guidanceScale'> {
  return {
    pipeline: (o.pipeline as string) ?? '',
    prompt: o.prompt as string,
    negativePrompt: (o.negativePrompt as string) ?? '',
    seed: o.seed as string | undefined,
    steps: (o.steps as number) ?? 0,
    guidanceScale: o.guidance as number | undefined,
    width: (o.width as number) ?? 0,
    height: (o.height as number) ?? 0,
    scheduler: (o.scheduler as string) ?? '',
    numImages: (o.numImages as number) ?? 0,
    clipSkip: (o.clipSkip as number) ?? 0,
    // The command prints results, not progress pictures.
    previews: false,
  };
}

/** Follow an event stream with a progress bar on stderr; resolves with the result event's payload. */
function follow<R>(stream: grpc.ClientReadableStream<GenerateEventMsg | CompareEventMsg>): Promise<R> {
  const bar = new cliProgress.SingleBar(
    { format: '{bar} {value}/{total} steps | {status}', stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let result: R | undefined;
  return new Promise<R>((resolve, reject) => {
    stream.on('data', (e: GenerateEventMsg | CompareEventMsg) => {
      if ('queued' in e && e.queued) {
        if (!started) bar.start(1, 0, { status: `queued, position ${e.queued.position}` });
        else bar.update({ status: `queued, position ${e.queued.position}` });
        started = true;
      } else if ('progress' in e && e.progress) {
        if (!started) bar.start(e.progress.total, 0, { status: 'denoising' });
        started = true;
        bar.setTotal(e.progress.total);
        bar.update(e.progress.step, { status: 'denoising' });
      } else if ('result' in e && e.result) {
        result = e.result as R;
      }
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (started) bar.stop();
      const msg = `${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`;
      reject(err.code === grpc.status.INVALID_ARGUMENT ? new UsageError(msg) : new Error(msg));
    });
    stream.on('end', () => {
      if (started) bar.stop();
      if (result) resolve(result);
      else reject(new Error('the server ended the stream without a result'));
    });
  });
}

/**
 * Writes the PNG and prints its path. A refused image (empty PNG) is not written; its verdict, and a flagged
 * image's, go to stderr so that stdout stays one path per line.
 */
function save(out: string, name: string, img: ImageMsg): void {
  if (img.safety?.flagged) process.stderr.write(`${name}: ${img.safety.reason}\n`);
  if (img.png.length === 0) return;
  writeFileSync(join(out, name), img.png);
  console.log(join(out, name));
}

export function register(program: Command): void {
  const client = program.command('client').description('call a running safe-sd server');

  connection(generationOptions(client.command('generate').description('generate images with one encoder')))
    .option('--encoder <name>', "text encoder (default: the pipeline's)")
    .action(async (o) => {
      const { client: c, metadata, options } = connect(o);
      const req = { ...requestFields(o), encoder: (o.encoder as string) ?? '' };
      try {
        const result = await follow<{ images: ImageMsg[] }>(c.generate(req, metadata, options));
        mkdirSync(o.out, { recursive: true });
        for (const [i, img] of result.images.entries()) save(o.out, `${img.seed}-${img.encoder}-${i}.png`, img);
      } finally {
        c.close();
      }
    });

  connection(
    generationOptions(client.command('compare').description('the same prompt and noise through several encoders')),
  )
    .requiredOption('--encoders <a,b,...>', 'two or more encoder names', (v) => v.split(',').map((s) => s.trim()))
    .action(async (o) => {
      const { client: c, metadata, options } = connect(o);
      const req = { ...requestFields(o), encoders: o.encoders as string[] };
      try {
        const result = await follow<{ columns: Array<{ encoder: string; images: ImageMsg[] }>; seed: string }>(
          c.compare(req, metadata, options),
        );
        mkdirSync(o.out, { recursive: true });
        for (const [k, col] of result.columns.entries()) {
          for (const [i, img] of col.images.entries()) save(o.out, `${result.seed}-${k}-${col.encoder}-${i}.png`, img);
        }
      } finally {
        c.close();
      }
    });

  connection(client.command('models').description("list the server's pipelines and encoders"))
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { client: c, metadata, options } = connect(o);
      try {
        const models = await new Promise<ListModelsResponseMsg>((resolve, reject) =>
          c.listModels({}, metadata, options, (err, res) =>
            err ? reject(new Error(`${grpc.status[err.code]}: ${err.details}`)) : resolve(res!),
          ),
        );
        if (o.json) return void console.log(JSON.stringify(models, null, 2));
        for (const p of models.pipelines) {
          console.log(
            `pipeline ${p.name}: ${p.defaultWidth}x${p.defaultHeight}, ${p.defaultSteps} steps, ` +
              `guidance ${p.defaultGuidanceScale}, ${p.defaultScheduler}, default encoder ${p.defaultEncoder}`,
          );
          for (const e of models.encoders.filter((x) => x.pipeline === p.name)) {
            console.log(
              `  encoder ${e.name}${e.safeClip ? ' (Safe-CLIP)' : ''}: hidden ${e.hiddenSize}, from ${e.source}`,
            );
          }
        }
      } finally {
        c.close();
      }
    });
}
