/**
 * Generation spread over one or more `safe-sd serve` targets. A target is one address, a load balancer in front of
 * replicas, or a `dns:///name:port` / `ipv4:a,b` target that grpc-js balances itself (../grpc/targets.ts). Each
 * target takes jobs from one shared queue (a few per address at a time, so the servers' batching can group them).
 * A job that fails with a transient status (UNAVAILABLE, a deadline, ...) goes back to the queue for any target;
 * a target that fails several times in a row is dropped for the rest of the run, and its jobs go to the others.
 * Calls that fail together (a replica dying with several of them in flight) count as one failure, so one replica
 * lost behind a balancer does not drop the balancer. A job that no target could do after `maxAttempts` tries, or
 * that every target has left, is reported failed; the run goes on.
 */
import * as grpc from '@grpc/grpc-js';
import {
  createDiffusionClient,
  type DiffusionClient,
  type GenerateEventMsg,
  type GenerateRequestMsg,
  type ImageMsg,
} from '../grpc/proto.js';
import { balancedChannelOptions, channelTarget, countAddresses, SCHEME } from '../grpc/targets.js';
import { jobRequest, type GenJob, type GenOutcome, type ImageGenerator, type JobSettings } from './generation.js';

const TRANSIENT = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.CANCELLED,
  grpc.status.ABORTED,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
]);

export interface RemoteOptions {
  /** Calls in flight per server address (a balanced target: per address it resolves to). */
  concurrency?: number;
  /** Tries of one job, over all servers. */
  maxAttempts?: number;
  /** Consecutive transient failures after which a server is dropped. */
  maxServerFailures?: number;
  /** Deadline of one call. */
  callTimeoutMs?: number;
  /** Wait before a server is tried again after a transient failure, times its failure count. */
  backoffMs?: number;
  token?: string;
}

interface Server {
  address: string;
  client: DiffusionClient;
  failures: number;
  /** When the last failure was seen: calls started before it that fail too are the same failure. */
  lastFailureAt: number;
  dead: boolean;
}

/**
 * `--servers`: one target with a scheme (`dns:///name:port`, `ipv4:a:1,b:2`), or a comma-separated list of addresses.
 */
export function parseServers(spec: string): string[] {
  if (SCHEME.test(spec.trim())) return [spec.trim()];
  return spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

interface Queued {
  job: GenJob;
  attempts: number;
  lastError?: string;
}

function call(
  server: Server,
  req: Partial<GenerateRequestMsg>,
  metadata: grpc.Metadata,
  timeoutMs: number,
): Promise<ImageMsg[]> {
  return new Promise((resolve, reject) => {
    let images: ImageMsg[] | undefined;
    const stream = server.client.generate(req, metadata, { deadline: Date.now() + timeoutMs });
    stream.on('data', (e: GenerateEventMsg) => {
      if ('result' in e && e.result) images = e.result.images;
    });
    stream.on('error', reject);
    stream.on('end', () =>
      images
        ? resolve(images)
        : reject(Object.assign(new Error('the stream ended without a result'), { code: grpc.status.INTERNAL })),
    );
  });
}

export class RemoteGenerator implements ImageGenerator {
  readonly where: string;
  private readonly servers: Server[];
  private readonly metadata = new grpc.Metadata();
  /** Servers dropped during the run, with why: for the report. */
  readonly dropped: Array<{ address: string; reason: string }> = [];

  constructor(
    addresses: string[],
    private readonly opts: RemoteOptions = {},
  ) {
    if (addresses.length === 0) throw new Error('no server address');
    this.where = addresses.join(',');
    this.servers = addresses.map((address) => ({
      address,
      // One target (a balancer, a dns:/// name) relies on the channel to retry a refused call on another replica.
      client: createDiffusionClient(
        channelTarget(address),
        grpc.credentials.createInsecure(),
        balancedChannelOptions({ retry: addresses.length === 1 }),
      ),
      failures: 0,
      lastFailureAt: 0,
      dead: false,
    }));
    const token = opts.token ?? process.env.SAFE_SD_TOKEN;
    if (token) this.metadata.set('authorization', `Bearer ${token}`);
  }

  async run(jobs: GenJob[], s: JobSettings, done: (job: GenJob, outcome: GenOutcome) => Promise<void>): Promise<void> {
    const concurrency = this.opts.concurrency ?? 2;
    const maxAttempts = this.opts.maxAttempts ?? 4;
    const maxFailures = this.opts.maxServerFailures ?? 3;
    const timeoutMs = this.opts.callTimeoutMs ?? 600_000;
    const backoffMs = this.opts.backoffMs ?? 500;
    const queue: Queued[] = jobs.map((job) => ({ job, attempts: 0 }));
    let inFlight = 0;

    const request = (j: GenJob): Partial<GenerateRequestMsg> => ({ ...jobRequest(j, s), seed: String(j.seed) });

    const lane = async (server: Server): Promise<void> => {
      while (!server.dead) {
        const item = queue.shift();
        if (!item) {
          // Another lane's job may still fail and come back; stay until nothing is in flight.
          if (inFlight === 0) return;
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        inFlight++;
        item.attempts++;
        const started = performance.now();
        let outcome: GenOutcome | undefined;
        try {
          const images = await call(server, request(item.job), this.metadata, timeoutMs);
          server.failures = 0;
          outcome = { ok: true, pngs: images.map((im) => im.png), seconds: (performance.now() - started) / 1000 };
        } catch (e) {
          const err = e as grpc.ServiceError;
          const message = `${server.address}: ${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`;
          if (!TRANSIENT.has(err.code)) {
            outcome = { ok: false, message };
          } else {
            if (started > server.lastFailureAt) server.failures++;
            server.lastFailureAt = performance.now();
            if (server.failures >= maxFailures && !server.dead) {
              server.dead = true;
              this.dropped.push({ address: server.address, reason: message });
            }
            if (item.attempts >= maxAttempts)
              outcome = { ok: false, message: `${item.attempts} tries failed; last: ${message}` };
            else queue.push({ ...item, lastError: message });
          }
        } finally {
          inFlight--;
        }
        if (outcome) await done(item.job, outcome);
        else if (!server.dead) await new Promise((r) => setTimeout(r, backoffMs * server.failures));
      }
    };

    const addresses = await Promise.all(this.servers.map((server) => countAddresses(channelTarget(server.address))));
    await Promise.all(
      this.servers.flatMap((server, i) => Array.from({ length: concurrency * addresses[i]! }, () => lane(server))),
    );
    // Every server was dropped: what is left fails (a rerun retries it).
    for (const item of queue.splice(0)) {
      await done(item.job, {
        ok: false,
        message: `no server left to run it${item.lastError ? `; last error: ${item.lastError}` : ''}`,
      });
    }
  }

  async close(): Promise<void> {
    for (const s of this.servers) s.client.close();
  }
}
