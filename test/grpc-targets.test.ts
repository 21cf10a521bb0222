import './helpers/alternative-resolver.js';
import test from 'ava';
import { createSocket } from 'node:dgram';
import { fileURLToPath } from 'node:url';
import * as dnsPacket from 'dns-packet';
import { pino } from 'pino';
import { RemoteGenerator, parseServers } from '../src/eval/generate-remote.js';
import type { GenJob, GenOutcome } from '../src/eval/generation.js';
import { BALANCED_SERVICE_CONFIG, channelTarget, countAddresses } from '../src/grpc/targets.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { STEPS_EXECUTED } from './helpers/fake-engine.js';
import { cli, freePort } from './helpers/processes.js';

const FAKE_ENGINE = fileURLToPath(new URL('./helpers/fake-engine.ts', import.meta.url));

test('targets: one address as it is, a list of IPs as grpc-js ipv4:/ipv6: lists, names in a list refused', (t) => {
  t.is(channelTarget('127.0.0.1:50051'), '127.0.0.1:50051');
  t.is(
    channelTarget('dns:///safe-sd-replicas.default.svc.cluster.local:50051'),
    'dns:///safe-sd-replicas.default.svc.cluster.local:50051',
  );
  t.is(channelTarget('127.0.0.1:1, 127.0.0.2:2'), 'ipv4:127.0.0.1:1,127.0.0.2:2');
  t.is(channelTarget('[::1]:1,[::1]:2'), 'ipv6:[::1]:1,[::1]:2');
  t.is(channelTarget('ipv4:127.0.0.1:1,127.0.0.2:2'), 'ipv4:127.0.0.1:1,127.0.0.2:2');
  t.throws(() => channelTarget('a.example:1,b.example:1'), {
    message: /a list of servers takes IP:port addresses; for names use dns:\/\/\/name:port/,
  });
  t.throws(() => channelTarget('127.0.0.1:1,[::1]:1'), { message: /mixes IPv4 and IPv6/ });
  t.deepEqual(parseServers('dns:///x:1'), ['dns:///x:1']);
  t.deepEqual(parseServers('ipv4:127.0.0.1:1,127.0.0.2:1'), ['ipv4:127.0.0.1:1,127.0.0.2:1']);
  t.deepEqual(parseServers('a:1, b:2'), ['a:1', 'b:2']);
  const retry = BALANCED_SERVICE_CONFIG.methodConfig[0]!.retryPolicy;
  t.deepEqual(retry.retryableStatusCodes, ['UNAVAILABLE']);
});

/** A DNS server on loopback that answers A queries for `name` with `addresses` (what a headless Service does). */
async function fakeDns(
  name: string,
  addresses: string[],
): Promise<{ authority: string; queries: string[]; close(): void }> {
  const socket = createSocket('udp4');
  const queries: string[] = [];
  socket.on('message', (msg, peer) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0];
    if (!question) return;
    queries.push(`${question.type} ${question.name}`);
    const answers =
      question.type === 'A' && question.name === name
        ? addresses.map((data) => ({ type: 'A' as const, name, ttl: 1, data }))
        : [];
    const reply = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: q.questions,
      answers,
    });
    socket.send(reply, peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { authority: `127.0.0.1:${socket.address().port}`, queries, close: () => socket.close() };
}

test.serial('a dns:// target is resolved by grpc-js and its calls spread round-robin over every address', async (t) => {
  const hosts = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
  const port = await freePort();
  const dns = await fakeDns('replicas.safe-sd.test', hosts);
  const counters = hosts.map(() => new SharedArrayBuffer(12));
  const servers: RunningServer[] = [];
  try {
    for (const [i, host] of hosts.entries()) {
      servers.push(
        await startServer({
          host,
          port,
          workers: 1,
          maxQueue: 16,
          maxBatch: 1,
          engineModule: FAKE_ENGINE,
          engineOptions: { manifest: 'fake', stepMs: 20, counters: counters[i] },
          maxResponseBytes: 16 << 20,
          logger: pino({ level: 'silent' }),
        }),
      );
    }
    const target = `dns://${dns.authority}/replicas.safe-sd.test:${port}`;
    t.is(await countAddresses(target), 3);
    const generator = new RemoteGenerator([target], { concurrency: 1 });
    const jobs: GenJob[] = Array.from({ length: 12 }, (_, i) => ({
      encoder: 'clip',
      promptId: `p${i}`,
      prompt: `prompt ${i}`,
      seed: BigInt(i),
    }));
    const outcomes: GenOutcome[] = [];
    await generator.run(
      jobs,
      {
        pipeline: 'toy',
        steps: 4,
        guidanceScale: 7.5,
        scheduler: 'ddim',
        width: 32,
        height: 32,
        numImages: 1,
        negativePrompt: '',
      },
      async (_, o) => {
        outcomes.push(o);
      },
    );
    await generator.close();
    t.is(outcomes.filter((o) => o.ok).length, 12, JSON.stringify(generator.dropped));
    const steps = counters.map((c) => Atomics.load(new Int32Array(c), STEPS_EXECUTED));
    t.log(`denoising steps run per address: ${steps.join(', ')}`);
    t.true(
      steps.every((s) => s > 0),
      `every address served calls: ${steps.join(', ')}`,
    );
    t.is(
      steps.reduce((a, b) => a + b, 0),
      12 * 4,
    );
    t.true(dns.queries.includes('A replicas.safe-sd.test'));

    // The CLI client takes the same target.
    const models = await cli(['client', 'models', '--server', target, '--json']);
    t.is(models.code, 0, models.stderr);
    t.is(JSON.parse(models.stdout).pipelines[0].name, 'toy');
  } finally {
    dns.close();
    for (const s of servers) await s.shutdown(0);
  }
});
