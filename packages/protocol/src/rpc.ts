/**
 * Request/reply over NATS with ferry's envelope: a request is a msgpack map carrying `v`;
 * a reply is `{ok: true, ...}` or `{ok: false, error: {code, message}}`.
 * Only NATS types are imported: the caller owns the connection.
 */
import type { Msg, NatsConnection, Subscription } from 'nats';
import type { z } from 'zod';
import { decode, encode } from './codec';
import { ErrorCode, FerryError, toFerryError, type ErrorBody } from './errors';
import { ErrorBodySchema } from './schemas';
import { PROTOCOL_VERSION } from './version';

/** Default wait for a reply; long operations pass their own. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;

export interface RequestOptions {
  timeoutMs?: number;
}

/** Checks a decoded value against `schema`; a mismatch is INVALID_ARGUMENT naming the fields. */
export function parseMessage<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  if (typeof value === 'object' && value !== null && 'v' in value && (value as { v: unknown }).v !== PROTOCOL_VERSION) {
    throw new FerryError(
      ErrorCode.FAILED_PRECONDITION,
      `protocol version ${String((value as { v: unknown }).v)} is not supported (this side speaks ${PROTOCOL_VERSION})`,
    );
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const issues = result.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join('.') || '(message)'}: ${i.message}`)
      .join('; ');
    throw new FerryError(ErrorCode.INVALID_ARGUMENT, `invalid message: ${issues}`);
  }
  return result.data;
}

export function encodeError(err: unknown): Uint8Array {
  return encode({ ok: false, error: toFerryError(err).toBody() });
}

/**
 * Sends a request and checks the reply. No responder maps to UNAVAILABLE (the peer is not
 * there), a timeout to DEADLINE_EXCEEDED; an error reply is rethrown as a FerryError.
 */
export async function request<S extends z.ZodType>(
  nc: NatsConnection,
  subject: string,
  body: Record<string, unknown>,
  replySchema: S,
  options: RequestOptions = {},
): Promise<z.infer<S>> {
  const timeout = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  let msg: Msg;
  try {
    msg = await nc.request(subject, encode({ v: PROTOCOL_VERSION, ...body }), { timeout });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '503') throw new FerryError(ErrorCode.UNAVAILABLE, `no one answers on ${subject}`, { cause: err });
    if (code === 'TIMEOUT' || code === 'TIMEOUT_ERROR') {
      throw new FerryError(ErrorCode.DEADLINE_EXCEEDED, `no reply on ${subject} within ${timeout} ms`, { cause: err });
    }
    throw new FerryError(ErrorCode.UNAVAILABLE, `request on ${subject} failed: ${(err as Error).message}`, { cause: err });
  }
  const reply = decode(msg.data, 64 * 1024 * 1024) as { ok?: unknown; error?: unknown };
  if (reply === null || typeof reply !== 'object' || typeof reply.ok !== 'boolean') {
    throw new FerryError(ErrorCode.INTERNAL, `malformed reply on ${subject}`);
  }
  if (!reply.ok) {
    const body = ErrorBodySchema.safeParse(reply.error);
    if (!body.success) throw new FerryError(ErrorCode.INTERNAL, `malformed error reply on ${subject}`);
    throw FerryError.fromBody(body.data as ErrorBody);
  }
  const { ok: _ok, ...rest } = reply;
  return parseMessage(replySchema, rest);
}

export type Handler<S extends z.ZodType> = (req: z.infer<S>, msg: Msg) => Promise<Record<string, unknown> | void>;

export interface ServeOptions {
  /** Called with each failed request, for logging; the error has already been replied. */
  onError?: (err: FerryError, subject: string) => void;
  /** Largest accepted request. */
  maxBytes?: number;
  queue?: string;
}

/**
 * Answers requests on `subject`. Each request is decoded, schema-checked and handled
 * concurrently; every failure becomes an error reply. Nothing a peer sends can throw here.
 */
export function serve<S extends z.ZodType>(
  nc: NatsConnection,
  subject: string,
  schema: S,
  handler: Handler<S>,
  options: ServeOptions = {},
): Subscription {
  return nc.subscribe(subject, {
    queue: options.queue,
    callback: (err, msg) => {
      if (err) return;
      void (async () => {
        try {
          const req = parseMessage(schema, decode(msg.data, options.maxBytes));
          const result = (await handler(req, msg)) ?? {};
          if (msg.reply) msg.respond(encode({ ok: true, ...result }));
        } catch (e) {
          const fe = toFerryError(e);
          options.onError?.(fe, msg.subject);
          if (msg.reply) msg.respond(encodeError(fe));
        }
      })();
    },
  });
}
