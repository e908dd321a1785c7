// The exact field lists of the page's wire types (web/src/wire.ts, web/src/protocol.ts), and a
// check that the golden examples the server's types wrote (web/golden/*.json) have exactly
// those fields. tsc checks that each example is assignable to its type (golden.gen.ts), but it
// lets imported JSON carry fields the type lacks; this catches those, and fields of the type
// that no example has (the server neither sends nor accepts them).
//
// The lists below are typed from the TS types themselves (`Fields<T>` needs every field of T
// and no other), so a field added to a type without adding it here fails tsc. Run by
// tests/wire/keys.mjs (from web/build) after tsc.

import apiGolden from "../../golden/api.json";
import terminalGolden from "../../golden/terminal.json";
import type * as protocol from "../../src/protocol";
import type * as wire from "../../src/wire";

/** How to walk one value of type T (null, where T allows it, is always fine). */
type Shape<T> = [NonNullable<T>] extends [string | number | boolean]
  ? "value"
  : [NonNullable<T>] extends [readonly (infer E)[]]
    ? { items: Shape<E> }
    : string extends keyof NonNullable<T>
      ? { values: Shape<NonNullable<T>[string]> }
      : { fields: Fields<NonNullable<T>> };

/** Every field of T, optional ones too, and nothing else. */
type Fields<T> = { [K in keyof T]-?: Shape<T[K]> };

/** A union tagged by `type`: the fields of each variant. */
type Variants<U extends { type: string }> = { [V in U["type"]]: Fields<Extract<U, { type: V }>> };

type TopShape<T> = [T] extends [{ type: string }] ? { variants: Variants<T & { type: string }> } : Shape<T>;

type AnyShape =
  | "value"
  | { items: AnyShape }
  | { values: AnyShape }
  | { fields: Record<string, AnyShape> }
  | { variants: Record<string, Record<string, AnyShape>> };

// ---------------------------------------------------------------- web/src/wire.ts

const port: Fields<wire.Port> = { port: "value", url: "value", path: "value" };

const stats: Fields<wire.Stats> = {
  cpu_percent: "value",
  memory_bytes: "value",
  memory_limit_bytes: "value",
  pids: "value",
  disk_used_bytes: "value",
  disk_total_bytes: "value",
};

const node: Fields<wire.Node> = {
  name: "value",
  hostname: "value",
  ip: "value",
  status: "value",
  image: "value",
  role: "value",
  ports: { items: { fields: port } },
  stats: { fields: stats },
  terminal: "value",
};

const session: Fields<wire.Session> = {
  id: "value",
  created_at: "value",
  expires_at: "value",
  max_expires_at: "value",
  template: "value",
  max_nodes: "value",
  nodes: { items: { fields: node } },
};

const image: Fields<wire.Image> = {
  name: "value",
  debian: "value",
  debian_version: "value",
  docker: "value",
  compose: "value",
  buildx: "value",
};

/** The golden file's keys: the names of the types in wire.ts. */
interface ApiTypes {
  Session: wire.Session;
  Node: wire.Node;
  Port: wire.Port;
  Stats: wire.Stats;
  ImageList: wire.ImageList;
  SessionEvent: wire.SessionEvent;
  ExecResult: wire.ExecResult;
  Uploaded: wire.Uploaded;
  ApiError: wire.ApiError;
  CreateSessionRequest: wire.CreateSessionRequest;
  ExtendRequest: wire.ExtendRequest;
  AddNodeRequest: wire.AddNodeRequest;
  ExecRequest: wire.ExecRequest;
}

const apiShapes: { [K in keyof ApiTypes]: TopShape<ApiTypes[K]> } = {
  Session: { fields: session },
  Node: { fields: node },
  Port: { fields: port },
  Stats: { fields: stats },
  ImageList: { fields: { default: "value", images: { items: { fields: image } } } },
  SessionEvent: {
    variants: {
      snapshot: { type: "value", session: { fields: session } },
      node_added: { type: "value", node: { fields: node } },
      node_updated: { type: "value", node: { fields: node } },
      node_removed: { type: "value", name: "value" },
      stats: { type: "value", nodes: { values: { fields: stats } } },
      progress: { type: "value", message: "value" },
      extended: { type: "value", expires_at: "value" },
      expiring: { type: "value", expires_at: "value", secs_left: "value" },
      ended: { type: "value", reason: "value" },
    },
  },
  ExecResult: {
    fields: { exit_code: "value", stdout: "value", stderr: "value", truncated: "value", timed_out: "value" },
  },
  Uploaded: { fields: { path: "value", size: "value" } },
  ApiError: { fields: { error: "value" } },
  CreateSessionRequest: {
    fields: {
      template: "value",
      duration_secs: "value",
      stack: { fields: { url: "value", compose: "value", name: "value" } },
    },
  },
  ExtendRequest: { fields: { secs: "value" } },
  AddNodeRequest: { fields: { image: "value", name: "value" } },
  ExecRequest: { fields: { cmd: { items: "value" }, stdin: "value", timeout_secs: "value" } },
};

// ---------------------------------------------------------------- web/src/protocol.ts

interface TerminalTypes {
  ServerMessage: protocol.ServerMessage;
  ClientMessage: protocol.ClientMessage;
}

const terminalShapes: { [K in keyof TerminalTypes]: TopShape<TerminalTypes[K]> } = {
  ServerMessage: {
    variants: {
      hello: {
        type: "value",
        offset: "value",
        cols: "value",
        rows: "value",
        readonly: "value",
        stream: "value",
        window: "value",
      },
      skipped: { type: "value", from: "value", to: "value" },
      restarted: { type: "value", offset: "value" },
      resized: { type: "value", cols: "value", rows: "value" },
      error: { type: "value", message: "value" },
      closed: { type: "value", reason: "value" },
      pong: { type: "value" },
    },
  },
  ClientMessage: {
    variants: {
      resize: { type: "value", cols: "value", rows: "value" },
      ack: { type: "value", offset: "value" },
      ping: { type: "value" },
    },
  },
};

// ---------------------------------------------------------------- the check

/** What a golden file is checked against: its TS module and the shapes of its types. */
interface Mirror {
  golden: string;
  module: string;
  examples: unknown;
  shapes: Record<string, AnyShape>;
}

export const mirrors: Mirror[] = [
  { golden: "web/golden/api.json", module: "web/src/wire.ts", examples: apiGolden, shapes: apiShapes },
  { golden: "web/golden/terminal.json", module: "web/src/protocol.ts", examples: terminalGolden, shapes: terminalShapes },
];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Compares one golden file with its shapes; returns the differences, one line each. */
export function check(m: Mirror): string[] {
  const problems: string[] = [];
  const say = (where: string, what: string): void => {
    problems.push(`${m.golden}: ${where}: ${what}`);
  };
  // Fields (and variants) of the TS types, by path, and those some example has.
  const declared = new Map<string, string[]>();
  const seen = new Map<string, Set<string>>();
  const note = (path: string, all: string[], present: string[]) => {
    declared.set(path, all);
    const s = seen.get(path) ?? new Set<string>();
    for (const k of present) s.add(k);
    seen.set(path, s);
  };

  const walk = (v: unknown, shape: AnyShape, path: string): void => {
    if (v === null) return; // whether null is allowed is tsc's to say
    if (shape === "value") {
      if (typeof v === "object") say(path, `the server sends ${JSON.stringify(v)} where the TS type has a plain value`);
      return;
    }
    if ("items" in shape) {
      if (!Array.isArray(v)) return say(path, "the server sends no array where the TS type has one");
      for (const item of v) walk(item, shape.items, `${path}[]`);
      return;
    }
    if (!isObject(v)) return say(path, `the server sends ${JSON.stringify(v)} where the TS type has an object`);
    if ("values" in shape) {
      for (const [k, item] of Object.entries(v)) walk(item, shape.values, `${path}{${k}}`);
      return;
    }
    let fields: Record<string, AnyShape>;
    let at = path;
    if ("variants" in shape) {
      const tag = v.type;
      note(`${path} variants`, Object.keys(shape.variants), [String(tag)]);
      if (typeof tag !== "string" || !(tag in shape.variants)) {
        return say(path, `variant "type": ${JSON.stringify(tag)} is sent by the server but missing from the TS type`);
      }
      fields = shape.variants[tag];
      at = `${path}(type "${tag}")`;
    } else {
      fields = shape.fields;
    }
    note(at, Object.keys(fields), Object.keys(v));
    for (const [k, item] of Object.entries(v)) {
      const f = fields[k];
      if (f === undefined) say(at, `field "${k}" is in the server's JSON but missing from the TS type`);
      else walk(item, f, `${at}.${k}`);
    }
  };

  if (!isObject(m.examples)) return [`${m.golden}: not a JSON object of type names to examples`];
  for (const name of Object.keys(m.shapes)) {
    if (!(name in m.examples)) say(name, `the TS type has no golden examples (the server has no such type?)`);
  }
  for (const [name, examples] of Object.entries(m.examples)) {
    const shape = m.shapes[name];
    if (shape === undefined) {
      say(name, `the server's type has no mirror in ${m.module} (or no field list in web/tests/wire/shapes.ts)`);
      continue;
    }
    if (!Array.isArray(examples) || examples.length === 0) {
      say(name, "expected a non-empty array of examples");
      continue;
    }
    for (const e of examples) walk(e, shape, name);
  }
  for (const [path, all] of declared) {
    const present = seen.get(path)!;
    for (const k of all) {
      if (present.has(k)) continue;
      if (path.endsWith(" variants")) {
        say(path.slice(0, -" variants".length), `variant "type": "${k}" is in the TS type but in no golden example (the server has no such variant?)`);
      } else {
        say(path, `field "${k}" is in the TS type but in no golden example (the server neither sends nor accepts it?)`);
      }
    }
  }
  return problems;
}
