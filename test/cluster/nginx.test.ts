/**
 * Three `safe-sd serve` replicas on 127.0.0.1 behind Debian's nginx with the project's deploy/nginx config: an
 * evaluation through it equals the in-process one while one replica is SIGKILLed and another drains after SIGTERM,
 * and a `client generate` in flight on a replica that gets SIGTERM completes.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findNginx, startNginx, type Nginx } from '../helpers/nginx.js';
import { cli, freePort, runDifferences, start, waitFor, waitForPort, type Child } from '../helpers/processes.js';

const nginxBinary = findNginx();
const dir = mkdtempSync(join(tmpdir(), 'cluster-nginx-'));
const env = { ...process.env, SAFE_SD_CACHE: join(dir, 'cache') };
const replicas: Array<{ port: number; child: Child }> = [];
let nginx: Nginx | undefined;
let nginxPort = 0;

test.after.always(async () => {
  for (const r of replicas)
    if (r.child.process.exitCode === null && r.child.process.signalCode === null) r.child.process.kill('SIGKILL');
  await nginx?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Six ViSU rows (twelve prompts), two encoders, four steps: 24 small jobs. */
const RUN = [
  'eval',
  '--prompts',
  'eval/toy-visu/test.jsonl',
  '--limit',
  '6',
  '--encoders',
  'original,safe',
  '--classifier',
  'eval/classifiers/toy-shapes.json',
  '--steps',
  '4',
];

/** Generate calls a replica's log says it finished with OK. */
function completed(c: Child): number {
  return c
    .output()
    .split('\n')
    .filter((l) => l.includes('"msg":"request done"') && l.includes('"code":"OK"')).length;
}

function accepted(c: Child): number {
  return c.output().split('"msg":"request accepted"').length - 1;
}

function recorded(out: string): number {
  try {
    return Object.keys(JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')).images).length;
  } catch {
    return 0;
  }
}

const serial = nginxBinary ? test.serial : test.skip;
if (!nginxBinary)
  console.warn(
    'test/cluster/nginx.test.ts: SKIPPED: nginx is not installed (apt-get install nginx; .ci/run installs it)',
  );

serial(
  'an eval through nginx equals the in-process run, with one replica SIGKILLed and one SIGTERMed mid-run',
  async (t) => {
    const single = join(dir, 'single');
    const inProcess = cli([...RUN, '--out', single], env);
    // The in-process run builds the graph cache the replicas then share.
    t.is((await inProcess).code, 0);
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      replicas.push({
        port,
        child: start(['serve', '--port', String(port), '--metrics-port', '0', '--grace-seconds', '60'], env),
      });
    }
    nginxPort = await freePort();
    nginx = startNginx(
      nginxBinary!,
      join(dir, 'nginx'),
      replicas.map((r) => r.port),
      nginxPort,
    );
    await Promise.all([...replicas.map((r) => waitForPort(r.port)), waitForPort(nginxPort)]);

    const out = join(dir, 'through-nginx');
    const evalRun = start([...RUN, '--out', out, '--servers', `127.0.0.1:${nginxPort}`, '--concurrency', '6'], env);
    await waitFor('3 pictures through nginx', () => recorded(out) >= 3);
    // The replica is killed with calls in flight: they fail and must run elsewhere, once.
    const inFlightOn0 = () => accepted(replicas[0]!.child) - completed(replicas[0]!.child);
    await waitFor('a call in flight on replica 0', () => inFlightOn0() > 0);
    const inFlight = inFlightOn0();
    replicas[0]!.child.process.kill('SIGKILL');
    await waitFor('6 pictures through nginx', () => recorded(out) >= 6);
    replicas[1]!.child.process.kill('SIGTERM');
    t.is(await evalRun.exited, 0, evalRun.output());
    t.is(await replicas[0]!.child.exited, 'SIGKILL');
    t.is(await replicas[1]!.child.exited, 0, replicas[1]!.child.output());
    t.log(`calls in flight on replica 0 when it was killed: ${inFlight}`);
    t.log(`calls finished by the replicas: ${replicas.map((r) => completed(r.child)).join(', ')}`);
    t.true(inFlight > 0, 'the SIGKILL interrupted running calls');

    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    t.deepEqual(report.counts.failedJobs, {});
    t.is(report.counts.generatedThisRun, 24);
    t.deepEqual(report.counts.droppedServers, []);
    t.deepEqual(runDifferences(single, out), []);
    // No generation ran twice to completion: the replicas finished exactly one call per job.
    t.is(
      replicas.reduce((a, r) => a + completed(r.child), 0),
      24,
    );
    t.notRegex(nginx.errorLog(), /\[(emerg|alert|crit)\]/);
  },
);

serial('a client generate through nginx, in flight on a replica that gets SIGTERM, completes', async (t) => {
  const last = replicas[2];
  if (!last || last.child.process.exitCode !== null) return t.fail('the first test did not leave replica 2 running');
  const before = accepted(last.child);
  const out = join(dir, 'client');
  const client = start(
    [
      'client',
      'generate',
      '--server',
      `127.0.0.1:${nginxPort}`,
      '--prompt',
      'a blue star on a white background',
      '--seed',
      '5',
      '--steps',
      '40',
      '--out',
      out,
    ],
    env,
  );
  await waitFor('replica 2 to accept the call', () => accepted(last.child) > before);
  last.child.process.kill('SIGTERM');
  t.is(await client.exited, 0, client.output());
  t.is(await last.child.exited, 0, last.child.output());
  t.true(existsSync(out) && readdirSync(out).some((f) => f === '5-original-0.png'));
  // The signal came while the call was running: the replica finished it during its drain.
  const log = last.child.output();
  const signalled = log.indexOf('"signal":"SIGTERM"');
  t.true(signalled > 0 && log.indexOf('"code":"OK"', signalled) > signalled, log);
});
