/** The bearer-token check every transport shares (gRPC metadata, HTTP headers, the /metrics endpoint). */
import { createHash, timingSafeEqual } from 'node:crypto';

export type TokenCheck = 'ok' | 'missing' | 'invalid';

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** A checker of `authorization` header values against `token`. */
export function bearerTokenChecker(token: string): (authorization: string | undefined) => TokenCheck {
  const expected = digest(token);
  return (authorization) => {
    const match = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
    if (!match) return 'missing';
    // Hash both sides so the comparison takes the same time whatever the token's length.
    return timingSafeEqual(digest(match[1]!), expected) ? 'ok' : 'invalid';
  };
}
