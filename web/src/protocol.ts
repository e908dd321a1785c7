// The terminal WebSocket protocol, mirrored from docs/protocol.md (server side:
// terminals/src/protocol.rs). Binary frames carry raw terminal bytes both ways; text frames
// carry one JSON control message each, tagged by "type". Keep this file in step with both:
// web/build checks the message types against web/golden/terminal.json, which
// terminals/tests/golden.rs writes from the Rust types.

/** Server to client, in text frames. The first message of every connection is `hello`. */
export type ServerMessage =
  | {
      type: "hello";
      /** Offset of the first terminal byte that follows. */
      offset: number;
      cols: number;
      rows: number;
      readonly: boolean;
      /** Id of this terminal's byte stream; offsets only mean something within one stream. */
      stream: string;
      /** Most unacknowledged bytes once the client sends acks. */
      window: number;
    }
  | { type: "skipped"; from: number; to: number }
  | { type: "restarted"; offset: number }
  | { type: "resized"; cols: number; rows: number }
  | { type: "error"; message: string }
  | { type: "closed"; reason: string }
  | { type: "pong" };

/** Client to server, in text frames. The server refuses unknown fields. */
export type ClientMessage =
  | { type: "resize"; cols: number; rows: number }
  | { type: "ack"; offset: number }
  | { type: "ping" };

/** Normal closure: the answer to the client's own close. */
export const CLOSE_NORMAL = 1000;
/** After `closed` (do not reconnect), or the peer stopped answering (reconnect). */
export const CLOSE_GOING_AWAY = 1001;
/** A server-side failure: reconnect. */
export const CLOSE_INTERNAL_ERROR = 1011;

/** Window sizes the server accepts, in character cells. */
export const MIN_SIZE = 1;
export const MAX_SIZE = 1000;

/** Acknowledge processed output at least this often (bytes), per the flow-control section. */
export const ACK_EVERY = 64 * 1024;

/** Reconnect backoff: 0.5 s doubling to 10 s. */
export const BACKOFF_FIRST_MS = 500;
export const BACKOFF_MAX_MS = 10_000;

export interface TerminalQuery {
  /** Resume offset: the client has every byte before it. Always sent with `stream`. */
  since?: number;
  stream?: string;
  readonly?: boolean;
  /** Which of the node's terminals; the server's `main` when absent. */
  name?: string;
}

/** The query string of `GET .../terminal` (with its leading "?", or empty). */
export function terminalQuery(q: TerminalQuery): string {
  const p = new URLSearchParams();
  if (q.since !== undefined && q.stream !== undefined) {
    p.set("since", String(q.since));
    p.set("stream", q.stream);
  }
  if (q.readonly) p.set("readonly", "1");
  if (q.name !== undefined) p.set("name", q.name);
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** Parses a text frame from the server; null for anything that is not a known message. */
export function parseServerMessage(text: string): ServerMessage | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const t = (v as { type?: unknown }).type;
  switch (t) {
    case "hello":
    case "skipped":
    case "restarted":
    case "resized":
    case "error":
    case "closed":
    case "pong":
      return v as ServerMessage;
    default:
      return null;
  }
}

/** Clamps a window size to what the server accepts. */
export function clampSize(n: number): number {
  return Math.min(MAX_SIZE, Math.max(MIN_SIZE, Math.floor(n)));
}
