/**
 * The comparison page at `/`: static HTML and CSS, and app.ts bundled by esbuild once, in memory, when the HTTP
 * server starts (about a tenth of a second), so `npm ci && npm start` needs no build step.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { FastifyInstance } from 'fastify';

const dir = (name: string) => fileURLToPath(new URL(`./page/${name}`, import.meta.url));

export async function bundlePage(): Promise<string> {
  const out = await build({
    entryPoints: [dir('app.ts')],
    bundle: true,
    write: false,
    format: 'esm',
    target: 'es2022',
    minify: true,
    logLevel: 'silent',
  });
  return out.outputFiles[0]!.text;
}

export async function registerPage(app: FastifyInstance): Promise<void> {
  const files = {
    '/': { type: 'text/html; charset=utf-8', body: readFileSync(dir('index.html'), 'utf8') },
    '/page/style.css': { type: 'text/css; charset=utf-8', body: readFileSync(dir('style.css'), 'utf8') },
    '/page/app.js': { type: 'text/javascript; charset=utf-8', body: await bundlePage() },
  };
  for (const [url, f] of Object.entries(files)) {
    app.get(url, async (_req, reply) => reply.type(f.type).header('cache-control', 'no-cache').send(f.body));
  }
}

/** Paths anyone may load without the bearer token: the page itself asks for the token before calling the API. */
export const PUBLIC_PATHS = new Set(['/', '/page/style.css', '/page/app.js']);
