/**
 * grpc-js (1.14) turns the grpc-timeout header into milliseconds with `| 0` and a plain setTimeout, so a deadline
 * more than 2^31-1 ms (24.8 days) away wraps or overflows and the call expires at once. Such a header is dropped
 * before grpc-js reads it: the call then has no server-side deadline, which for a deadline weeks away is the same.
 */
import type { EventEmitter } from 'node:events';
import type * as grpc from '@grpc/grpc-js';

const MAX_TIMER_MS = 2 ** 31 - 1;
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** Milliseconds of a grpc-timeout header value ("30S", "100m"), or NaN when it is not one. */
export function timeoutMs(value: string): number {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : NaN;
}

/**
 * Install the header filter on the HTTP/2 servers grpc-js created for `server` (call after bindAsync). Reaches
 * into grpc-js's private `http2Servers`; returns false when that is gone (test/grpc-deadline.test.ts then shows
 * whether grpc-js itself still overflows).
 */
export function acceptFarDeadlines(server: grpc.Server): boolean {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) return false;
  for (const h2 of servers.keys() as Iterable<EventEmitter>) {
    h2.prependListener('stream', (_stream: unknown, headers: Record<string, unknown>) => {
      const value = headers['grpc-timeout'];
      if (typeof value === 'string' && timeoutMs(value) > MAX_TIMER_MS) delete headers['grpc-timeout'];
    });
  }
  return true;
}
