// The HTTP API of `sandpit serve` (docs/api.md): one function per route. JSON in, JSON out;
// errors are {"error": "..."} with a 4xx/5xx status and become an `ApiError`. The JSON types
// are in wire.ts.

import type {
  AddNodeRequest,
  CreateSessionRequest,
  ExecRequest,
  ExecResult,
  ExtendRequest,
  ImageList,
  Node,
  Session,
  TemplateId,
  Uploaded,
  ApiError as ErrorBody,
} from "./wire";

export const TEMPLATES: { id: TemplateId; label: string; nodes: number }[] = [
  { id: "1m1w", label: "1 manager + 1 worker", nodes: 2 },
  { id: "3m2w", label: "3 managers + 2 workers", nodes: 5 },
  { id: "5m", label: "5 managers", nodes: 5 },
];

/** A session id: 32 lowercase hex digits. */
export const SESSION_ID = /^[0-9a-f]{32}$/;

/** An answer other than 2xx, with the server's message made readable. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** The session (or node) does not exist any more. */
  get notFound(): boolean {
    return this.status === 404;
  }
}

/** Fallback wording when the server gave no message (a proxy's error page, say). */
function statusMessage(status: number): string {
  switch (status) {
    case 400:
      return "the server did not accept this request";
    case 404:
      return "not found: the session or node does not exist any more";
    case 409:
      return "a limit of this session was reached";
    case 413:
      return "too large for the server";
    case 429:
      return "too many sessions from your address; end one and try again";
    case 503:
      return "the server is at capacity right now; try again in a few minutes";
    default:
      return status >= 500 ? "the server failed; try again" : `request failed (HTTP ${status})`;
  }
}

/** Server clock minus ours, in ms, from the last answer's Date header (seconds precision). */
export let clockSkewMs = 0;

async function request<T>(method: string, path: string, body?: BodyInit | object): Promise<T> {
  const init: RequestInit = { method, headers: {} };
  if (body instanceof Blob || body instanceof ArrayBuffer || typeof body === "string") {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)["content-type"] = "application/json";
  }
  let res: Response;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, "cannot reach the server; check your connection and try again");
  }
  const date = res.headers.get("date");
  if (date) {
    const t = Date.parse(date);
    if (!Number.isNaN(t)) clockSkewMs = t + 500 - Date.now();
  }
  const text = await res.text();
  if (!res.ok) {
    let message = "";
    try {
      const v = JSON.parse(text) as Partial<ErrorBody> | null;
      if (typeof v?.error === "string") message = v.error;
    } catch {
      // not JSON: use the generic wording
    }
    throw new ApiError(res.status, message || statusMessage(res.status));
  }
  return (text ? JSON.parse(text) : undefined) as T;
}

const enc = encodeURIComponent;
const sessionPath = (sid: string) => `/api/sessions/${enc(sid)}`;
const nodePath = (sid: string, node: string) => `${sessionPath(sid)}/nodes/${enc(node)}`;

export const api = {
  images: () => request<ImageList>("GET", "/api/images"),
  createSession: (req: CreateSessionRequest = {}) => request<Session>("POST", "/api/sessions", req),
  getSession: (sid: string) => request<Session>("GET", sessionPath(sid)),
  deleteSession: (sid: string) => request<void>("DELETE", sessionPath(sid)),
  extendSession: (sid: string, secs?: number) =>
    request<Session>("POST", `${sessionPath(sid)}/extend`, (secs === undefined ? {} : { secs }) satisfies ExtendRequest),
  addNode: (sid: string, image?: string) =>
    request<Node>("POST", `${sessionPath(sid)}/nodes`, (image === undefined ? {} : { image }) satisfies AddNodeRequest),
  getNode: (sid: string, node: string) => request<Node>("GET", nodePath(sid, node)),
  deleteNode: (sid: string, node: string) => request<void>("DELETE", nodePath(sid, node)),
  exec: (sid: string, node: string, cmd: string[], stdin?: string, timeout_secs?: number) =>
    request<ExecResult>("POST", `${nodePath(sid, node)}/exec`, { cmd, stdin, timeout_secs } satisfies ExecRequest),
  /** Puts a file into the node; a relative `path` is under /root. */
  upload: (sid: string, node: string, path: string, data: Blob) =>
    request<Uploaded>("PUT", `${nodePath(sid, node)}/files?path=${enc(path)}`, data),
};

/** ws:// or wss:// URL of a server path, on the page's own origin. */
export function wsUrl(path: string): string {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}${path}`;
}

export const eventsPath = (sid: string) => `${sessionPath(sid)}/events`;
