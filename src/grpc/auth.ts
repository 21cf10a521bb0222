/** Bearer-token check for every RPC except the standard health service (load balancers probe it unauthenticated). */
import { createHash, timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';

const EXEMPT_PREFIX = '/grpc.health.v1.Health/';

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export function bearerTokenInterceptor(token: string): grpc.ServerInterceptor {
  const expected = digest(token);
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        const listener = new grpc.ServerListenerBuilder()
          .withOnReceiveMetadata((metadata, mdNext) => {
            if (method.path.startsWith(EXEMPT_PREFIX)) return mdNext(metadata);
            const header = String(metadata.get('authorization')[0] ?? '');
            const match = /^Bearer\s+(.+)$/i.exec(header);
            // Hash both sides so the comparison takes the same time whatever the token's length.
            if (match && timingSafeEqual(digest(match[1]!), expected)) return mdNext(metadata);
            call.sendStatus({
              code: grpc.status.UNAUTHENTICATED,
              details: match ? 'invalid bearer token' : 'missing "authorization: Bearer <token>" metadata',
            });
          })
          .build();
        next(listener);
      },
    });
}
