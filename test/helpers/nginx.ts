/**
 * Debian's nginx with the project's own deploy/nginx/safe-sd.conf, run as a foreground process on loopback: only
 * the replica addresses and the listening port are rewritten; logs, pid and temp files go to a temp folder.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './processes.js';

export function findNginx(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    if (dir && existsSync(join(dir, 'nginx'))) return join(dir, 'nginx');
  }
  return undefined;
}

function replaceOnce(text: string, re: RegExp, by: string, what: string): string {
  const n = text.match(new RegExp(re.source, 'gm'))?.length ?? 0;
  if (n !== 1) throw new Error(`deploy/nginx/safe-sd.conf: expected one ${what}, found ${n}`);
  return text.replace(new RegExp(re.source, 'm'), by);
}

/** The project's config with these replicas and this port. */
export function loopbackConfig(replicaPorts: number[], port: number): string {
  let conf = readFileSync(join(ROOT, 'deploy/nginx/safe-sd.conf'), 'utf8');
  const servers = /((?:^ *server \S+:50051 [^\n]*\n)+)/;
  const options = / *server \S+:50051 ([^;\n]*);/.exec(conf)?.[1];
  conf = replaceOnce(
    conf,
    servers,
    replicaPorts.map((p) => `    server 127.0.0.1:${p} ${options};\n`).join(''),
    'block of replica lines',
  );
  return replaceOnce(conf, /^ *listen 50051 http2;/, `    listen 127.0.0.1:${port} http2;`, 'listen line');
}

export interface Nginx {
  process: ChildProcess;
  errorLog(): string;
  stop(): Promise<void>;
}

export function startNginx(binary: string, dir: string, replicaPorts: number[], port: number): Nginx {
  mkdirSync(join(dir, 'temp'), { recursive: true });
  writeFileSync(join(dir, 'safe-sd.conf'), loopbackConfig(replicaPorts, port));
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((k) => `${k}_temp_path ${join(dir, 'temp', k)};`)
    .join(' ');
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;\nevents { worker_connections 256; }\n` +
      `http { access_log ${join(dir, 'access.log')}; ${temps}\n  include ${join(dir, 'safe-sd.conf')};\n}\n`,
  );
  const args = [
    '-p',
    dir,
    '-c',
    join(dir, 'nginx.conf'),
    '-e',
    join(dir, 'error.log'),
    '-g',
    `daemon off; pid ${join(dir, 'nginx.pid')};`,
  ];
  execFileSync(binary, [...args, '-t'], { stdio: 'pipe' });
  const child = spawn(binary, args, { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return {
    process: child,
    errorLog: () => (existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : ''),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGQUIT');
      await exited;
    },
  };
}
