import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const GENERATED = join(ROOT, 'src/grpc/generated');

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

test('the committed gRPC message types are what `npm run proto:types` makes of the .proto', (t) => {
  const script = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts['proto:types'] as string;
  const out = mkdtempSync(join(tmpdir(), 'safe-sd-proto-'));
  try {
    const args = script
      .split(' ')
      .slice(1)
      .map((a) => (a.startsWith('--outDir=') ? `--outDir=${out}` : a));
    execFileSync(join(ROOT, 'node_modules/.bin/proto-loader-gen-types'), args, { cwd: ROOT, stdio: 'pipe' });
    t.deepEqual(files(out), files(GENERATED));
    for (const f of files(out)) {
      t.is(
        readFileSync(join(GENERATED, f), 'utf8'),
        readFileSync(join(out, f), 'utf8'),
        `${f}: run npm run proto:types`,
      );
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
