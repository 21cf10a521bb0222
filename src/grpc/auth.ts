/** Bearer-token check for every RPC except the standard health service (load balancers probe it unauthenticated). */
import * as grpc from '@grpc/grpc-js';
import { bearerTokenChecker } from '../serving/bearer-token.js';

const EXEMPT_PREFIX = '/grpc.health.v1.Health/';

export function bearerTokenInterceptor(token: string): grpc.ServerInterceptor {
  const check = bearerTokenChecker(token);
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        const listener = new grpc.ServerListenerBuilder()
          .withOnReceiveMetadata((metadata, mdNext) => {
            if (method.path.startsWith(EXEMPT_PREFIX)) return mdNext(metadata);
            const result = check(String(metadata.get('authorization')[0] ?? ''));
            if (result === 'ok') return mdNext(metadata);
            call.sendStatus({
              code: grpc.status.UNAUTHENTICATED,
              details:
                result === 'invalid' ? 'invalid bearer token' : 'missing "authorization: Bearer <token>" metadata',
            });
          })
          .build();
        next(listener);
      },
    });
}
