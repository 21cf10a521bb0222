/**
 * deploy/: every manifest parses, and every flag, port and path it uses exists in `safe-sd serve|eval --help`, the
 * Dockerfile, the image's contents and the server's metrics.
 */
import test from 'ava';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { SERVICE_NAME } from '../src/grpc/proto.js';
import { ServerMetrics } from '../src/serving/metrics.js';
import { cli, ROOT } from './helpers/processes.js';

interface Container {
  name: string;
  args?: string[];
  ports?: Array<{ name: string; containerPort: number }>;
  volumeMounts?: Array<{ mountPath: string }>;
  readinessProbe?: { grpc?: { port: number; service?: string } };
  livenessProbe?: { grpc?: { port: number } };
  startupProbe?: { grpc?: { port: number } };
}

/** A container of a workload's pod template, with the fields these tests read from it. */
type TemplateContainer = Container & {
  args: string[];
  ports: Array<{ name: string; containerPort: number }>;
  resources: { limits: Record<string, number | string> };
};

/** The spec fields these tests read, over the kinds in deploy/ (each kind has only some of them). */
interface Spec {
  template: {
    metadata: { annotations: Record<string, string> };
    spec: { terminationGracePeriodSeconds?: number; containers: TemplateContainer[]; volumes?: unknown[] };
  };
  selector: { matchLabels: Record<string, string> };
  clusterIP?: string;
  ports: Array<{ targetPort: string }>;
  completionMode?: string;
  completions: number;
  parallelism: number;
  scaleTargetRef: { name: string };
  metrics: Array<{ pods: { metric: { name: string } } }>;
}

interface Doc {
  file: string;
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  spec: Spec;
}

const yamlFiles = (readdirSync(join(ROOT, 'deploy'), { recursive: true, encoding: 'utf8' }) as string[])
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => join(ROOT, 'deploy', f));

function docs(): Doc[] {
  return yamlFiles.flatMap((file) =>
    parseAllDocuments(readFileSync(file, 'utf8')).map((d) => {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
      return { ...(d.toJS() as Omit<Doc, 'file'>), file: relative(ROOT, file) };
    }),
  );
}

function podSpec(
  d: Doc,
): { terminationGracePeriodSeconds?: number; containers: Container[]; volumes?: unknown[] } | undefined {
  return d.kind === 'Deployment' || d.kind === 'Job' ? d.spec.template?.spec : undefined;
}

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const exposed = new Set(
  [...dockerfile.matchAll(/^EXPOSE\s+(.+)$/gm)].flatMap((m) => m[1]!.trim().split(/\s+/).map(Number)),
);
const dockerignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

/** Value of `--flag` in an argument list. */
function arg(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

let help: Promise<Record<string, string>> | undefined;
function helpTexts(): Promise<Record<string, string>> {
  help ??= Promise.all(['serve', 'eval'].map((c) => cli([c, '--help']))).then(([serve, evaluate]) => ({
    serve: serve!.stdout,
    eval: evaluate!.stdout,
  }));
  return help;
}

function flagsOf(args: string[]): string[] {
  return args.filter((a) => a.startsWith('--'));
}

test('every manifest parses and names a kind', (t) => {
  const all = docs();
  t.true(yamlFiles.length >= 8, yamlFiles.join(', '));
  for (const d of all) t.truthy(d.kind ?? (d as unknown as { rules?: unknown }).rules, d.file);
  t.deepEqual([...new Set(all.filter((d) => d.kind).map((d) => d.kind))].sort(), [
    'Deployment',
    'HorizontalPodAutoscaler',
    'Job',
    'Kustomization',
    'PersistentVolumeClaim',
    'Service',
  ]);
});

test("every flag the manifests and the Dockerfile pass exists in that command's --help", async (t) => {
  const texts = await helpTexts();
  const cmd = /^CMD\s+(\[.*\])$/m.exec(dockerfile);
  const argLists: Array<{ where: string; args: string[] }> = [{ where: 'Dockerfile CMD', args: JSON.parse(cmd![1]!) }];
  for (const d of docs())
    for (const c of podSpec(d)?.containers ?? [])
      if (c.args) argLists.push({ where: `${d.file} ${c.name}`, args: c.args });
  t.true(argLists.length >= 6);
  for (const { where, args } of argLists) {
    const command = args[0]!;
    t.true(command in texts, `${where}: ${command} is a safe-sd command`);
    for (const flag of flagsOf(args))
      t.regex(texts[command]!, new RegExp(`(^|\\s)${flag}[\\s,<]`), `${where}: ${flag} in safe-sd ${command} --help`);
  }
});

test("ports: the server's flags, container ports, probes, Services, scrape annotation and EXPOSE agree", (t) => {
  const all = docs();
  const base = all.find((d) => d.kind === 'Deployment' && d.file === 'deploy/k8s/base/serve.yaml')!;
  const baseArgs = base.spec.template.spec.containers[0].args as string[];
  let checked = 0;
  for (const d of all) {
    const spec = podSpec(d);
    for (const c of spec?.containers ?? []) {
      if (c.args?.[0] !== 'serve') continue;
      if (d !== base) {
        // A kustomize patch replaces the argument list: the ports and the grace stay the base's.
        for (const flag of ['--port', '--metrics-port', '--grace-seconds'])
          t.is(arg(c.args, flag), arg(baseArgs, flag), `${d.file} ${flag}`);
        continue;
      }
      checked++;
      const ports = Object.fromEntries((c.ports ?? []).map((p) => [p.name, p.containerPort]));
      t.is(Number(arg(c.args, '--port')), ports.grpc, d.file);
      t.is(Number(arg(c.args, '--metrics-port')), ports.metrics, d.file);
      for (const p of Object.values(ports))
        t.true(exposed.has(p), `${d.file}: port ${p} is in the Dockerfile's EXPOSE`);
      for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe])
        t.is(probe?.grpc?.port, ports.grpc, `${d.file}: probe on the gRPC port`);
      t.is(c.readinessProbe?.grpc?.service, SERVICE_NAME);
      t.is(d.spec.template.metadata.annotations['prometheus.io/port'], String(ports.metrics));
      t.is(d.spec.template.metadata.annotations['prometheus.io/scrape'], 'true');
      // The kubelet waits long enough for a drain, and the liveness probe never fails a draining pod.
      const grace = Number(arg(c.args, '--grace-seconds'));
      t.true(
        spec!.terminationGracePeriodSeconds! >= grace + 5,
        `${d.file}: terminationGracePeriodSeconds covers --grace-seconds ${grace}`,
      );
      const live = c.livenessProbe as { periodSeconds: number; failureThreshold: number };
      t.true(live.periodSeconds * live.failureThreshold > spec!.terminationGracePeriodSeconds!);
    }
  }
  t.is(checked, 1);
  const deployment = base;
  const grpcName = deployment.spec.template.spec.containers[0].ports.find(
    (p: { containerPort: number }) => p.containerPort === 50051,
  )!.name;
  const services = all.filter((d) => d.kind === 'Service');
  t.deepEqual(services.map((s) => s.spec.clusterIP ?? 'ClusterIP').sort(), ['ClusterIP', 'None']);
  for (const s of services) {
    t.deepEqual(s.spec.selector, deployment.spec.selector.matchLabels);
    t.deepEqual(
      s.spec.ports.map((p: { targetPort: string }) => p.targetPort),
      [grpcName],
    );
  }
  t.regex(dockerfile, /^USER\s+(?!0\b|root\b)\S+/m);
  t.true((dockerfile.match(/^FROM\s/gm) ?? []).length >= 2, 'multi-stage');
  t.regex(dockerfile, /^RUN npm ci$/m);
  t.regex(dockerfile, /^ENTRYPOINT \["node", "bin\/safe-sd\.js"\]$/m);
});

test('paths: files the manifests name are in the image, absolute paths are on a mounted volume', (t) => {
  for (const d of docs()) {
    for (const c of podSpec(d)?.containers ?? []) {
      const mounts = (c.volumeMounts ?? []).map((m) => m.mountPath);
      for (const [i, a] of (c.args ?? []).entries()) {
        if (a.startsWith('/')) {
          t.true(
            mounts.some((m) => a === m || a.startsWith(`${m}/`)),
            `${d.file}: ${a} is under one of ${mounts.join(', ') || 'no mounts'}`,
          );
        } else if (/^[\w-]+\/[\w./-]+$/.test(a) && !a.includes('$(')) {
          t.true(existsSync(join(ROOT, a)), `${d.file}: ${a} exists`);
          t.false(
            dockerignore.some((x) => a === x || a.startsWith(`${x}/`)),
            `${d.file}: ${a} is not in .dockerignore`,
          );
        } else if (c.args![i - 1] === '--manifest') t.fail(`${d.file}: --manifest ${a}`);
      }
    }
  }
  for (const needed of [
    'bin',
    'src',
    'proto',
    'pipelines',
    'weights',
    'eval',
    'package.json',
    'package-lock.json',
    '.npmrc',
  ]) {
    t.false(dockerignore.includes(needed), `${needed} goes into the image`);
  }
});

test('Indexed Jobs slice by JOB_COMPLETION_INDEX into as many slices as completions; merge reads their folder', (t) => {
  const jobs = docs().filter((d) => d.kind === 'Job');
  const indexed = jobs.filter((j) => j.spec.completionMode === 'Indexed');
  t.is(indexed.length, 2);
  for (const j of indexed) {
    const args = j.spec.template.spec.containers[0].args as string[];
    t.is(arg(args, '--shard'), `$(JOB_COMPLETION_INDEX)/${j.spec.completions}`, j.file);
    t.is(j.spec.parallelism, j.spec.completions);
  }
  const inProcess = indexed.find((j) => !j.spec.template.spec.containers[0].args.includes('--servers'))!;
  t.is(inProcess.spec.template.spec.containers[0].resources.limits['nvidia.com/gpu'], 1);
  const remote = indexed.find((j) => j !== inProcess)!;
  t.regex(arg(remote.spec.template.spec.containers[0].args, '--servers')!, /^dns:\/\/\/safe-sd-replicas:50051$/);
  const merge = jobs.find((j) => j.spec.completionMode !== 'Indexed')!;
  t.is(
    arg(merge.spec.template.spec.containers[0].args, '--merge'),
    arg(inProcess.spec.template.spec.containers[0].args, '--out'),
  );
});

test('the autoscaler scales the Deployment on a metric the server exports, served by the adapter rule', async (t) => {
  const all = docs();
  const hpa = all.find((d) => d.kind === 'HorizontalPodAutoscaler')!;
  t.is(hpa.spec.scaleTargetRef.name, all.find((d) => d.kind === 'Deployment')!.metadata.name);
  const name = hpa.spec.metrics[0].pods.metric.name as string;
  const exported = (await new ServerMetrics().registry.getMetricsAsJSON()).map((m) => m.name);
  t.true(exported.includes(name), `${name} in ${exported.join(', ')}`);
  const adapter = parseAllDocuments(
    readFileSync(join(ROOT, 'deploy/prometheus-adapter/values.yaml'), 'utf8'),
  )[0]!.toJS();
  const rule = adapter.rules.custom[0];
  t.true(rule.seriesQuery.startsWith(`${name}{`));
  t.is(rule.name.as, name);
});

test('nginx: grpc_pass names the upstream the file defines, with retries on connection errors only', (t) => {
  const conf = readFileSync(join(ROOT, 'deploy/nginx/safe-sd.conf'), 'utf8').replace(/#.*$/gm, '');
  const upstream = /upstream\s+(\S+)\s*\{/.exec(conf)?.[1];
  t.truthy(upstream);
  t.regex(conf, new RegExp(`grpc_pass grpc://${upstream};`));
  t.regex(conf, /listen 50051 http2;/);
  t.regex(conf, /grpc_next_upstream error;/);
  t.notRegex(conf, /non_idempotent|grpc_next_upstream\s[^;]*timeout/);
});

test('kustomizations: every resource and patch exists, and none points at a folder above it (kustomize refuses that)', (t) => {
  const kustomizations = yamlFiles.filter((f) => f.endsWith('kustomization.yaml'));
  t.true(kustomizations.length >= 3);
  for (const file of kustomizations) {
    const dir = dirname(file);
    const k = parse(readFileSync(file, 'utf8')) as { resources?: string[]; patches?: Array<{ path: string }> };
    for (const entry of [...(k.resources ?? []), ...(k.patches ?? []).map((p) => p.path)]) {
      const target = resolve(dir, entry);
      const where = `${relative(ROOT, file)}: ${entry}`;
      t.true(existsSync(target), `${where} exists`);
      t.false(dir === target || dir.startsWith(`${target}${sep}`), `${where} is not a folder above the kustomization`);
    }
  }
});
