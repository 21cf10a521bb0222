/**
 * HTTP errors, each answered in the style of the API that was called: AUTOMATIC1111's (`detail`, FastAPI's 422
 * list for invalid bodies) under /sdapi/, OpenAI's (`error.message`, `error.type`) everywhere else.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { FailureKind } from '../serving/request-queue.js';

export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    /** OpenAI's `error.code`, e.g. `model_not_found`, `content_policy_violation`. */
    readonly code?: string,
  ) {
    super(message);
  }
}

/** The status of a request the queue refused or ended without images (499: the client closed the request). */
export function httpStatus(kind: FailureKind): number {
  return { invalid: 400, 'queue-full': 429, unavailable: 503, cancelled: 499, deadline: 504, internal: 500 }[kind];
}

export type ErrorStyle = 'a1111' | 'openai';

export function errorStyle(url: string): ErrorStyle {
  return url.startsWith('/sdapi/') ? 'a1111' : 'openai';
}

/** OpenAI's error types by status. */
function openaiType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

export function openaiError(status: number, message: string, code?: string) {
  return { error: { message, type: openaiType(status), param: null, code: code ?? null } };
}

/** The body of an error response in the style of the API at `url`. */
export function errorBody(url: string, status: number, message: string, code?: string): object {
  if (errorStyle(url) === 'openai') return openaiError(status, message, code);
  return { error: status >= 500 ? 'InternalServerError' : 'HTTPException', detail: message, body: '', errors: message };
}

/** One error handler for the whole server: the route's URL decides the style. */
export function handleError(err: FastifyError | HttpError, request: FastifyRequest, reply: FastifyReply): void {
  const url = request.url;
  if ('validation' in err && err.validation) {
    const fields = err.validation.map((v) => ({
      loc: [
        'body',
        ...v.instancePath.split('/').filter(Boolean),
        ...(v.params?.missingProperty ? [String(v.params.missingProperty)] : []),
      ],
      msg: v.message ?? 'invalid',
      type: `value_error.${v.keyword}`,
    }));
    const text = err.validation
      .map((v) => `${v.instancePath.slice(1).replaceAll('/', '.') || 'body'} ${v.message}`)
      .join('; ');
    // FastAPI answers an invalid body with 422 and a list of what is wrong where; OpenAI with 400.
    if (errorStyle(url) === 'a1111') return void reply.code(422).send({ detail: fields });
    return void reply.code(400).send(openaiError(400, `invalid request body: ${text}`));
  }
  const status = err.statusCode && err.statusCode >= 400 ? err.statusCode : 500;
  if (status >= 500) request.log.error({ err }, 'request failed');
  const message = status >= 500 && !(err instanceof HttpError) ? 'internal server error' : err.message;
  void reply.code(status).send(errorBody(url, status, message, err instanceof HttpError ? err.code : undefined));
}
