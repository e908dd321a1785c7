// The JSON of the HTTP API and of the session events (docs/api.md), mirrored from the server's
// types: server/src/session.rs (views, events, CreateSession), server/src/exec.rs and
// server/src/api.rs (the other request bodies, the upload answer, errors). Types only.
//
// Every type here is checked against web/golden/api.json, examples that a Rust test writes
// from the real types: tsc checks that each example is assignable, and tests/wire/keys.ts
// that the field lists match exactly (see web/README.md). Rust's `Option` is `| null` in an
// answer and an optional field in a request.

export type TemplateId = "1m1w" | "3m2w" | "5m";
/** `sandbox::NodeStatus`. */
export type NodeStatus = "creating" | "running" | "failed" | "destroying";
/** A node's swarm role, when a template made the swarm. */
export type Role = "manager" | "worker";
/** Why a session ended; `failed`: its template could not be set up. */
export type EndReason = "expired" | "deleted" | "failed";

/** `PortView`. */
export interface Port {
  port: number;
  /** By hostname: http://node1-<sid>-8080.localhost:8080/ */
  url: string;
  /** By path on the server: /p/<sid>/node1/8080/ */
  path: string;
}

/** `StatsView`. */
export interface Stats {
  cpu_percent: number;
  memory_bytes: number;
  memory_limit_bytes: number;
  pids: number;
  disk_used_bytes: number;
  disk_total_bytes: number;
}

/** `NodeView`. */
export interface Node {
  name: string;
  hostname: string;
  /** Null while the node is being created, or when it failed. */
  ip: string | null;
  status: NodeStatus;
  image: string;
  /** Null unless a template made the swarm. */
  role: Role | null;
  ports: Port[];
  /** Null until the first sample. */
  stats: Stats | null;
  /** Path of the terminal WebSocket. */
  terminal: string;
}

/** `SessionView`. */
export interface Session {
  id: string;
  created_at: string;
  expires_at: string;
  max_expires_at: string;
  /** Null for a session started empty. */
  template: TemplateId | null;
  max_nodes: number;
  nodes: Node[];
}

/** Messages of `GET /api/sessions/{sid}/events` (`Event`); the first is always a snapshot. */
export type SessionEvent =
  | { type: "snapshot"; session: Session }
  | { type: "node_added"; node: Node }
  | { type: "node_updated"; node: Node }
  | { type: "node_removed"; name: string }
  | { type: "stats"; nodes: Record<string, Stats> }
  | { type: "progress"; message: string }
  | { type: "extended"; expires_at: string }
  | { type: "expiring"; expires_at: string; secs_left: number }
  | { type: "ended"; reason: EndReason };

/** A base image nodes can be made from (`ImageView`); a null version: the image lacks it. */
export interface Image {
  name: string;
  /** Debian release (`trixie`) and point release (`13.8`). */
  debian: string;
  debian_version: string | null;
  docker: string | null;
  compose: string | null;
  buildx: string | null;
}

/** The answer of `GET /api/images`. */
export interface ImageList {
  default: string;
  images: Image[];
}

/** The answer of `POST .../exec`. */
export interface ExecResult {
  /** 128+N when signal N ended the command; null when it timed out. */
  exit_code: number | null;
  stdout: string;
  stderr: string;
  truncated: boolean;
  timed_out: boolean;
}

/** The answer of `PUT .../files`. */
export interface Uploaded {
  path: string;
  size: number;
}

/** The body of every answer other than 2xx. (api.ts's `ApiError` is the thrown error.) */
export interface ApiError {
  error: string;
}

// Request bodies. The server refuses unknown fields; an absent field takes its default.

/** `POST /api/sessions` (`CreateSession`). */
export interface CreateSessionRequest {
  template?: TemplateId;
  duration_secs?: number;
  stack?: StackRequest;
}

/** A compose file the new session deploys on node1 (`docs/pwd.md`): a `url` the server may
 * fetch (`--stack-source`) or the file itself. */
export interface StackRequest {
  url?: string;
  compose?: string;
  name?: string;
}

/** `POST /api/sessions/{sid}/extend`. */
export interface ExtendRequest {
  secs?: number;
}

/** `POST /api/sessions/{sid}/nodes`. */
export interface AddNodeRequest {
  image?: string;
  /** The node's name; the first free `nodeN` when absent. */
  name?: string;
}

/** `POST .../exec`. */
export interface ExecRequest {
  cmd: string[];
  stdin?: string;
  timeout_secs?: number;
}
