/**
 * Client channels to one or many `safe-sd serve` replicas. A `dns:///name:port` target (a Kubernetes headless
 * Service) or an `ipv4:`/`ipv6:` list is resolved by grpc-js itself and balanced with its `round_robin` policy; calls
 * that a replica refuses before starting (UNAVAILABLE: draining, or gone) are retried by grpc-js on the next one.
 * A call that has received any event is never retried by the channel: a started generation runs only once.
 */
import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import type * as grpc from '@grpc/grpc-js';
import { SERVICE_NAME } from './proto.js';

export const BALANCED_SERVICE_CONFIG = {
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [
    {
      name: [{ service: SERVICE_NAME }],
      retryPolicy: {
        maxAttempts: 5,
        initialBackoff: '0.2s',
        maxBackoff: '5s',
        backoffMultiplier: 2,
        retryableStatusCodes: ['UNAVAILABLE'],
      },
    },
  ],
};

/**
 * Channel options with the service config above. `retry: false` keeps round_robin but leaves retries to the caller:
 * `eval --servers a,b` spreads its calls over its own list and moves a refused one to another address at once.
 */
export function balancedChannelOptions(opts: { retry?: boolean } = {}): grpc.ChannelOptions {
  const config =
    opts.retry === false
      ? { loadBalancingConfig: BALANCED_SERVICE_CONFIG.loadBalancingConfig }
      : BALANCED_SERVICE_CONFIG;
  return { 'grpc.service_config': JSON.stringify(config), 'grpc.max_receive_message_length': 256 * 1024 * 1024 };
}

/** grpc-js's own name schemes: the target goes to its resolver as it is. */
export const SCHEME = /^(dns|ipv4|ipv6|unix|unix-abstract|vsock):/;

function splitHostPort(address: string): { host: string; port: string } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  return m ? { host: m[1]!, port: m[2]! } : undefined;
}

/**
 * One grpc-js target for what a user typed: a `scheme:` target as it is; `host:port` as it is; a comma-separated
 * list of IP `host:port`s as grpc-js's `ipv4:`/`ipv6:` list, which round_robin balances. A list of names cannot be
 * one channel: it is refused with the way to write it (`dns:///name:port` with a name that lists the replicas).
 */
export function channelTarget(spec: string): string {
  if (SCHEME.test(spec.trim())) return spec.trim();
  const parts = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (parts.length === 0) throw new Error('no server address');
  if (parts.length === 1) return parts[0]!;
  const hosts = parts.map((p) => ({ p, hp: splitHostPort(p) }));
  const bad = hosts.find((h) => !h.hp || !isIP(h.hp.host));
  if (bad) throw new Error(`${bad.p}: a list of servers takes IP:port addresses; for names use dns:///name:port`);
  const families = new Set(hosts.map((h) => isIP(h.hp!.host)));
  if (families.size > 1) throw new Error(`${spec}: a list mixes IPv4 and IPv6 addresses`);
  return `${families.has(6) ? 'ipv6' : 'ipv4'}:${parts.join(',')}`;
}

/**
 * How many addresses a target stands for right now (for sizing the calls kept in flight; grpc-js resolves it again
 * on its own schedule). `dns://server/name:port` asks that DNS server where grpc-js does too: with its switch
 * GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true; otherwise both use the system's resolver.
 */
export async function countAddresses(target: string): Promise<number> {
  const list = /^ipv[46]:(.*)$/.exec(target);
  if (list) return list[1]!.split(',').length;
  const m = /^dns:\/\/([^/]*)\/(.+)$/.exec(target);
  if (!m) return 1;
  const host = splitHostPort(m[2]!)?.host ?? m[2]!;
  if (isIP(host)) return 1;
  try {
    if (!m[1] || process.env.GRPC_NODE_USE_ALTERNATIVE_RESOLVER !== 'true')
      return (await dns.lookup(host, { all: true })).length;
    const resolver = new dns.Resolver();
    resolver.setServers([m[1]]);
    const found = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
    return Math.max(
      1,
      found.reduce((a, r) => a + (r.status === 'fulfilled' ? r.value.length : 0), 0),
    );
  } catch {
    return 1;
  }
}
