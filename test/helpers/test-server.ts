/** Server options for tests: loopback, any free port, one worker, quiet; the fake engine unless a test names one. */
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import type { ServerOptions } from '../../src/server/server.js';

export const FAKE_ENGINE = fileURLToPath(new URL('./fake-engine.ts', import.meta.url));

export function testServerOptions(overrides: Partial<ServerOptions> = {}): ServerOptions {
  return {
    host: '127.0.0.1',
    port: 0,
    workers: 1,
    maxQueue: 16,
    maxBatch: 4,
    engineModule: FAKE_ENGINE,
    engineOptions: {},
    maxResponseBytes: 16 << 20,
    logger: pino({ level: 'silent' }),
    ...overrides,
  };
}
