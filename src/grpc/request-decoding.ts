/**
 * Undecodable request bytes are the client's error: grpc-js answers a throwing deserializer with INTERNAL, so the
 * Diffusion service's deserializers hand the handlers a marker instead, and they answer INVALID_ARGUMENT.
 */
import type * as grpc from '@grpc/grpc-js';

const UNDECODABLE = Symbol('undecodable request');

interface Undecodable {
  [UNDECODABLE]: string;
}

/** The service with deserializers that return a marker (see undecodable()) instead of throwing. */
export function withTolerantDecoding(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const tolerant = (method: grpc.MethodDefinition<unknown, unknown>) => ({
    ...method,
    requestDeserialize: (bytes: Buffer) => {
      try {
        return method.requestDeserialize(bytes);
      } catch (e) {
        return { [UNDECODABLE]: (e as Error).message } satisfies Undecodable;
      }
    },
  });
  return Object.fromEntries(Object.entries(service).map(([name, method]) => [name, tolerant(method)]));
}

/** Why the request could not be decoded, or undefined for a decoded request. */
export function undecodable(request: unknown): string | undefined {
  return typeof request === 'object' && request !== null && UNDECODABLE in request
    ? (request as Undecodable)[UNDECODABLE]
    : undefined;
}
