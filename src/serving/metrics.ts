/** Prometheus metrics of one server instance (own registry, so several servers can share a process in tests). */
import http from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { bearerTokenChecker } from './bearer-token.js';

/** How a request ended: images, withdrawn by its client, past its deadline, refused at submission, or broken. */
export type RequestOutcome = 'completed' | 'cancelled' | 'expired' | 'refused' | 'failed';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'safesd_requests_total',
    help: 'Requests that reached the queue, by how they ended',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'safesd_queue_depth',
    help: 'Requests waiting for an inference worker',
    registers: [this.registry],
  });
  readonly requestDuration = new Histogram({
    name: 'safesd_request_duration_seconds',
    help: 'Time from accepting a request to its final status',
    labelNames: ['method', 'code'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  });
  readonly queueWait = new Histogram({
    name: 'safesd_queue_wait_seconds',
    help: 'Time a request waited in the queue before its batch started',
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly imagesGenerated = new Counter({
    name: 'safesd_images_generated_total',
    help: 'Images returned to clients, by text encoder',
    labelNames: ['encoder'] as const,
    registers: [this.registry],
  });
  readonly imagesFlagged = new Counter({
    name: 'safesd_images_flagged_total',
    help: "Images the pipeline's safety classifier flagged as unsafe, by text encoder (whatever its action)",
    labelNames: ['encoder'] as const,
    registers: [this.registry],
  });
  readonly batchSize = new Histogram({
    name: 'safesd_batch_size',
    help: 'Jobs per batch handed to an inference worker',
    buckets: [1, 2, 3, 4, 6, 8, 12, 16, 32],
    registers: [this.registry],
  });

  constructor(defaultMetrics = false) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** Serve /metrics over HTTP, behind the bearer token when one is given; resolves once listening. */
  async listen(host: string, port: number, token?: string): Promise<http.Server> {
    const check = token ? bearerTokenChecker(token) : undefined;
    const server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('not found\n');
        return;
      }
      if (check && check(req.headers.authorization) !== 'ok') {
        res.writeHead(401, { 'www-authenticate': 'Bearer' }).end('missing or invalid bearer token\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (e: Error) => res.writeHead(500).end(`${e.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return server;
  }
}
