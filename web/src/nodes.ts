// How a node shows on the session page: its card in the node list (status, address, role,
// port count, CPU and memory), its title and port links in the terminal's toolbar, and what
// the terminal pane says while the node has no shell. Pure rendering from a `Node`; the page
// (session.ts) decides when.

import { formatBytes, h } from "./dom";
import type { LinkState } from "./terminal";
import type { Node as SandpitNode } from "./wire";

/** The node list's entry: a select button (name, status, address, stats) and a delete button. */
export function nodeCard(
  n: SandpitNode,
  selected: boolean,
  onSelect: () => void,
  onDelete: () => void,
): HTMLElement[] {
  const count = n.ports.length;
  const select = h(
    "button",
    {
      type: "button",
      class: "node",
      "aria-current": selected ? "true" : undefined,
      "data-node": n.name,
    },
    h(
      "span",
      { class: "node-line" },
      h("span", { class: `dot ${n.status}`, title: n.status, "aria-hidden": "true" }),
      h("span", { class: "node-name" }, n.hostname),
      n.role ? h("span", { class: `role ${n.role}` }, n.role) : null,
      h("span", { class: "sr-only" }, `, ${n.status}`),
    ),
    h("span", { class: "node-line muted" }, n.ip ?? "no address yet", count ? ` · ${count} port${count > 1 ? "s" : ""}` : ""),
    statsLine(n),
  );
  select.addEventListener("click", onSelect);
  const del = h(
    "button",
    {
      type: "button",
      class: "icon delete",
      "aria-label": `Delete ${n.hostname}`,
      title: `Delete ${n.hostname}`,
      disabled: n.status === "destroying",
    },
    "✕",
  );
  del.addEventListener("click", onDelete);
  return [select, del];
}

/** CPU and memory of a running node (`.stats`, replaced in place on each `stats` event). */
export function statsLine(n: SandpitNode): HTMLElement {
  const s = n.stats;
  if (!s || n.status !== "running") return h("span", { class: "stats muted" }, n.status === "running" ? "…" : n.status);
  const memPct = s.memory_limit_bytes ? (100 * s.memory_bytes) / s.memory_limit_bytes : 0;
  return h(
    "span",
    { class: "stats" },
    h("span", { title: "CPU" }, `CPU ${s.cpu_percent.toFixed(s.cpu_percent < 10 ? 1 : 0)}%`),
    h(
      "span",
      { class: "mem", title: `memory: ${formatBytes(s.memory_bytes)} of ${formatBytes(s.memory_limit_bytes)}` },
      `RAM ${formatBytes(s.memory_bytes)}`,
      h(
        "span",
        { class: "bar", role: "meter", "aria-label": "memory used", "aria-valuenow": Math.round(memPct), "aria-valuemin": 0, "aria-valuemax": 100 },
        h("span", { style: `width:${Math.min(100, memPct).toFixed(1)}%` }),
      ),
    ),
  );
}

/** The toolbar's title: hostname, the address once the node has one, and the base image. */
export function nodeTitle(n: SandpitNode): HTMLElement {
  return h(
    "span",
    { class: "node-title" },
    h("strong", {}, n.hostname),
    n.ip !== null ? h("span", { class: "muted" }, n.ip) : null,
    h("span", { class: "muted", "data-test": "node-image-name", title: "base image" }, n.image),
  );
}

/** Links to the node's published ports, each opening a new tab; null when there are none. */
export function portLinks(n: SandpitNode): HTMLElement | null {
  if (!n.ports.length) return null;
  return h(
    "span",
    { class: "ports", "data-test": "ports" },
    h("span", { class: "muted" }, "Ports:"),
    n.ports.map((p) =>
      h(
        "a",
        {
          href: p.url || p.path,
          target: "_blank",
          rel: "noopener noreferrer",
          class: "port",
          "data-port": p.port,
          title: `open port ${p.port} of ${n.hostname} in a new tab`,
        },
        String(p.port),
        h("span", { "aria-hidden": "true" }, " ↗"),
      ),
    ),
  );
}

/** What the terminal pane shows instead of a shell while the node is not running. */
export function notRunning(n: SandpitNode): HTMLElement[] {
  switch (n.status) {
    case "creating":
      return [h("p", { class: "spinner" }, `Starting ${n.hostname}…`)];
    case "failed":
      return [h("p", { class: "error" }, `${n.hostname} failed to start.`), h("p", {}, "Delete it and add another node.")];
    case "destroying":
      return [h("p", {}, `${n.hostname} is being deleted…`)];
    case "running":
      return [];
  }
}

/** The toolbar's words for the state of a terminal's connection. */
export function linkText(s: LinkState | null): string {
  if (!s) return "";
  switch (s.kind) {
    case "connecting":
      return "connecting…";
    case "connected":
      return s.resumed ? "reconnected" : "connected";
    case "reconnecting":
      return `reconnecting… (retry in ${Math.ceil(s.inMs / 1000)} s)`;
    case "closed":
      return `closed: ${s.reason}`;
  }
}
