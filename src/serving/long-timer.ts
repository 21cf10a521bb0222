/**
 * setTimeout for any delay. Node fires a timer whose delay exceeds 2^31-1 ms (24.8 days) after 1 ms, so a request
 * with a far deadline would expire at once; longer delays are waited in chunks.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

export function setLongTimeout(callback: () => void, delayMs: number): LongTimer {
  let timer: NodeJS.Timeout;
  const arm = (left: number) => {
    timer = left > MAX_TIMER_MS ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(callback, left);
    timer.unref();
  };
  arm(Math.max(0, delayMs));
  return { clear: () => clearTimeout(timer) };
}
