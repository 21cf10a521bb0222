/**
 * Process signals of the server: SIGTERM or SIGINT drains (no new requests, running ones get the grace period);
 * a later signal ends the grace at once. Nothing here exits while an inference worker may be inside onnxruntime:
 * a thread torn down there aborts the whole process (exit 134) and drops every connection, so the process leaves
 * only after the server stopped, which waits for the workers to return from their current UNet call.
 */
import type { Logger } from 'pino';

export interface Stoppable {
  shutdown(graceMs: number): Promise<void>;
  endGraceNow(): void;
}

/**
 * Under `npm start`, Ctrl-C reaches the server twice: from the terminal (same process group) and forwarded by npm.
 * A repeat of the same signal this soon is that one keypress, not a second request to hurry.
 */
const SAME_KEYPRESS_MS = 100;

/** Resolves once a signal stopped the server. */
export function stopOnSignals(server: Stoppable, graceMs: number, logger: Logger): Promise<void> {
  return new Promise((resolve, reject) => {
    let first: { signal: NodeJS.Signals; at: number } | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      const now = performance.now();
      if (!first) {
        first = { signal, at: now };
        logger.info({ signal, graceMs }, 'signal received: draining');
        server.shutdown(graceMs).then(resolve, reject);
      } else if (signal === first.signal && now - first.at < SAME_KEYPRESS_MS) {
        logger.debug({ signal }, 'repeated signal ignored');
      } else {
        logger.warn({ signal }, 'second signal: ending the grace period now; workers stop after their current call');
        server.endGraceNow();
      }
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
