/**
 * `npm run report:screenshot -- <report.html> <out.png>`: render a report in headless Chromium (Debian's
 * /usr/bin/chromium, or $CHROMIUM) to check how it looks.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [html, png, size = '1280,2000'] = process.argv.slice(2);
if (!html || !png) {
  process.stderr.write('usage: npm run report:screenshot -- <report.html> <out.png> [width,height]\n');
  process.exit(2);
}
if (!existsSync(html)) {
  process.stderr.write(`report:screenshot: ${html}: no such file\n`);
  process.exit(2);
}
const chromium = process.env.CHROMIUM ?? '/usr/bin/chromium';
const profile = mkdtempSync(join(tmpdir(), 'safe-sd-chromium-'));
try {
  const flags = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--user-data-dir=${profile}`,
    `--screenshot=${resolve(png)}`,
    `--window-size=${size}`,
    '--hide-scrollbars',
  ];
  const r = spawnSync(chromium, [...flags, pathToFileURL(resolve(html)).href], {
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 120_000,
  });
  if (r.error) throw new Error(`${chromium}: ${r.error.message} (install it: apt-get install -y chromium)`);
  if (r.status !== 0 || !existsSync(png))
    throw new Error(
      `${chromium} exited with ${r.status}: ${r.stderr.toString().trim().split('\n').slice(-3).join(' | ')}`,
    );
  process.stderr.write(`report:screenshot: wrote ${png}\n`);
} catch (e) {
  process.stderr.write(`report:screenshot: ${(e as Error).message}\n`);
  process.exitCode = 1;
} finally {
  rmSync(profile, { recursive: true, force: true });
}
