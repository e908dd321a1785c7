// The session page (/s/{sid}): nodes with live stats, one terminal per node, published ports,
// the expiry countdown, uploads, and the "session ended" screen. Live state comes from the
// session's events WebSocket (docs/api.md); after a drop, a GET tells whether the session
// still exists before the events socket is opened again.

import {
  ApiError,
  type Node as SandpitNode,
  type Session,
  type SessionEvent,
  api,
  clockSkewMs,
  eventsPath,
  wsUrl,
} from "./api";
import { formatBytes, formatClock, h, replace } from "./dom";
import { BACKOFF_FIRST_MS, BACKOFF_MAX_MS } from "./protocol";
import { type LinkState, TerminalView } from "./terminal";

/** Warn this long before the end (the server's `expiring` event comes at the same time). */
const WARN_SECS = 5 * 60;
const FONT_KEY = "sandpit.fontSize";
const FONT_MIN = 9;
const FONT_MAX = 28;

interface NodeEntry {
  node: SandpitNode;
  item: HTMLLIElement;
  terminal: TerminalView | null;
  link: LinkState | null;
  /** When "reconnected" was shown, to fall back to "connected" after a moment. */
  linkTimer?: number;
}

export class SessionPage {
  private session: Session | null = null;
  private readonly nodes = new Map<string, NodeEntry>();
  private selected: string | null = null;
  private events: WebSocket | null = null;
  private eventsAttempt = 0;
  private eventsTimer: number | undefined;
  private clockTimer: number | undefined;
  private ended = false;
  private adding = false;
  private fontSize: number;
  private warned = false;

  // Chrome
  private readonly countdown = h("span", { class: "countdown", "data-test": "countdown" });
  private readonly extendButton = h(
    "button",
    { type: "button", class: "secondary", "data-test": "extend" },
    "Extend",
  );
  private readonly liveState = h("span", { class: "live-state", "aria-live": "polite", hidden: true });
  private readonly warningText = h("span", {});
  private readonly warningExtend = h("button", { type: "button", class: "secondary" }, "Extend");
  private readonly warning = h("div", { class: "warning", hidden: true }, this.warningText, this.warningExtend);
  private readonly announce = h("div", { class: "sr-only", role: "alert" });
  private readonly notices = h("div", { class: "notices", "aria-live": "polite" });
  private readonly list = h("ul", { class: "node-list", "aria-label": "Nodes" });
  private readonly addButton = h(
    "button",
    { type: "button", class: "primary", "data-test": "add-node" },
    "+ Add node",
  );
  private readonly progress = h("p", { class: "progress", "aria-live": "polite" });
  private readonly toolbar = h("div", { class: "toolbar" });
  private readonly termHost = h("div", { class: "term-host" });
  private readonly placeholder = h("div", { class: "placeholder" });
  private readonly dropOverlay = h("div", { class: "drop-overlay", hidden: true });
  private readonly fileInput = h("input", {
    type: "file",
    multiple: true,
    hidden: true,
    "data-test": "upload-input",
  });
  private readonly dialog = h("dialog", { class: "confirm" });
  private readonly fontLabel = h("span", { class: "font-size" });

  constructor(
    private readonly root: HTMLElement,
    private readonly sid: string,
    initial: Session | null,
  ) {
    const saved = Number(localStorage.getItem(FONT_KEY));
    this.fontSize = saved >= FONT_MIN && saved <= FONT_MAX ? saved : 14;
    this.render();
    this.exposeForTests();
    if (initial) {
      this.applySnapshot(initial);
      this.connectEvents();
    } else {
      void this.refresh(true);
    }
    this.clockTimer = window.setInterval(() => this.tick(), 1000);
    window.addEventListener("online", this.onWake);
    document.addEventListener("visibilitychange", this.onWake);
  }

  /** Stops everything this page started (navigating away from it inside the app). */
  dispose(): void {
    this.ended = true;
    window.clearInterval(this.clockTimer);
    window.clearTimeout(this.eventsTimer);
    window.removeEventListener("online", this.onWake);
    document.removeEventListener("visibilitychange", this.onWake);
    this.events?.close(1000);
    this.events = null;
    for (const e of this.nodes.values()) e.terminal?.dispose();
    this.nodes.clear();
  }

  // ---------------------------------------------------------------- layout

  private render(): void {
    this.extendButton.addEventListener("click", () => void this.extend());
    this.warningExtend.addEventListener("click", () => void this.extend());
    this.addButton.addEventListener("click", () => void this.addNode());
    this.fileInput.addEventListener("change", () => {
      const files = Array.from(this.fileInput.files ?? []);
      this.fileInput.value = "";
      void this.upload(files);
    });
    const endButton = h("button", { type: "button", class: "ghost", "data-test": "end" }, "End session");
    endButton.addEventListener("click", () => void this.endSession());

    const pane = h(
      "section",
      { class: "pane", "aria-label": "Terminal" },
      this.toolbar,
      this.termHost,
      this.dropOverlay,
    );
    this.termHost.append(this.placeholder);
    this.setupDrop(pane);

    this.root.replaceChildren(
      h(
        "div",
        { class: "session" },
        h(
          "header",
          { class: "topbar" },
          h("a", { class: "logo", href: "/", "aria-label": "sandpit home" }, "sandpit"),
          h("div", { class: "expiry" }, this.countdown, this.extendButton),
          this.liveState,
          h("div", { class: "spacer" }),
          endButton,
        ),
        this.warning,
        h(
          "div",
          { class: "body" },
          h(
            "aside",
            { class: "sidebar" },
            h("div", { class: "sidebar-head" }, h("h2", {}, "Nodes"), this.addButton),
            this.list,
            this.progress,
          ),
          h("div", { class: "main" }, this.notices, pane),
        ),
      ),
      this.fileInput,
      this.dialog,
      this.announce,
    );
    this.renderToolbar();
    this.renderPlaceholder();
    document.title = "sandpit session";
  }

  private renderToolbar(): void {
    const entry = this.selected ? this.nodes.get(this.selected) : undefined;
    if (!entry) {
      replace(this.toolbar, h("span", { class: "muted" }, "No node selected"));
      return;
    }
    const n = entry.node;
    const running = n.status === "running";
    const ports = n.ports.length
      ? h(
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
        )
      : null;
    const upload = h(
      "button",
      {
        type: "button",
        class: "secondary",
        disabled: !running,
        "data-test": "upload",
        title: "Upload files into /root of this node (or drop them onto the terminal)",
      },
      "Upload file",
    );
    upload.addEventListener("click", () => this.fileInput.click());
    const smaller = h(
      "button",
      { type: "button", class: "icon", "aria-label": "Smaller font", title: "Smaller font" },
      "A−",
    );
    const larger = h(
      "button",
      { type: "button", class: "icon", "aria-label": "Larger font", title: "Larger font" },
      "A+",
    );
    smaller.addEventListener("click", () => this.setFontSize(this.fontSize - 1));
    larger.addEventListener("click", () => this.setFontSize(this.fontSize + 1));
    this.fontLabel.textContent = `${this.fontSize}px`;
    replace(
      this.toolbar,
      h(
        "span",
        { class: "node-title" },
        h("strong", {}, n.hostname),
        n.ip ? h("span", { class: "muted" }, n.ip) : null,
      ),
      h("span", { class: "link-state", "data-test": "link-state", "aria-live": "polite" }, linkText(entry.link)),
      ports,
      h("span", { class: "spacer" }),
      upload,
      h("span", { class: "font-controls", role: "group", "aria-label": "Font size" }, smaller, this.fontLabel, larger),
    );
    const ls = this.toolbar.querySelector(".link-state") as HTMLElement;
    ls.dataset.kind = entry.link?.kind ?? "none";
  }

  private renderPlaceholder(): void {
    const entry = this.selected ? this.nodes.get(this.selected) : undefined;
    let content: (Node | string)[] = [];
    if (!entry) {
      const add = h("button", { type: "button", class: "primary big" }, "+ Add your first node");
      add.addEventListener("click", () => void this.addNode());
      content = this.nodes.size
        ? [h("p", {}, "Choose a node on the left.")]
        : [
            h("p", {}, "This session has no nodes yet."),
            add,
            h("p", { class: "muted" }, "Each node is a Linux machine with its own Docker engine."),
          ];
    } else if (entry.node.status === "creating") {
      content = [h("p", { class: "spinner" }, `Starting ${entry.node.hostname}…`)];
    } else if (entry.node.status === "failed") {
      content = [
        h("p", { class: "error" }, `${entry.node.hostname} failed to start.`),
        h("p", {}, "Delete it and add another node."),
      ];
    } else if (entry.node.status === "destroying") {
      content = [h("p", {}, `${entry.node.hostname} is being deleted…`)];
    }
    this.placeholder.hidden = content.length === 0;
    replace(this.placeholder, content);
  }

  private renderItem(entry: NodeEntry): void {
    const n = entry.node;
    const select = h(
      "button",
      {
        type: "button",
        class: "node",
        "aria-current": this.selected === n.name ? "true" : undefined,
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
      h("span", { class: "node-line muted" }, n.ip || "no address yet", n.ports.length ? ` · ${n.ports.length} port${n.ports.length > 1 ? "s" : ""}` : ""),
      statsLine(n),
    );
    select.addEventListener("click", () => this.select(n.name));
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
    del.addEventListener("click", () => void this.deleteNode(n.name));
    replace(entry.item, select, del);
    entry.item.dataset.status = n.status;
  }

  // ---------------------------------------------------------------- state

  private applySnapshot(s: Session): void {
    this.session = s;
    const names = new Set(s.nodes.map((n) => n.name));
    for (const name of [...this.nodes.keys()]) if (!names.has(name)) this.removeNode(name);
    for (const n of s.nodes) this.upsertNode(n);
    this.sortList();
    if (!this.selected || !this.nodes.has(this.selected)) {
      const wanted = decodeURIComponent(location.hash.slice(1));
      const first = this.nodes.has(wanted) ? wanted : s.nodes[0]?.name;
      if (first) this.select(first, false);
    }
    this.updateAddButton();
    this.tick();
  }

  private upsertNode(n: SandpitNode): void {
    let entry = this.nodes.get(n.name);
    if (!entry) {
      entry = { node: n, item: h("li", {}), terminal: null, link: null };
      this.nodes.set(n.name, entry);
      this.list.append(entry.item);
      this.sortList();
    } else {
      entry.node = n;
    }
    this.renderItem(entry);
    // A terminal the server closed while the node lives on (a server restart): open it again.
    if (entry.terminal?.isClosed && n.status === "running" && !this.ended) entry.terminal.reopen();
    if (n.name === this.selected) {
      this.ensureTerminal(entry);
      this.renderToolbar();
      this.renderPlaceholder();
    }
    if (!this.selected) this.select(n.name, false);
  }

  private removeNode(name: string): void {
    const entry = this.nodes.get(name);
    if (!entry) return;
    entry.terminal?.dispose();
    entry.item.remove();
    this.nodes.delete(name);
    if (this.selected === name) {
      this.selected = null;
      const next = this.nodes.keys().next();
      if (!next.done) this.select(next.value, false);
      else {
        this.renderToolbar();
        this.renderPlaceholder();
      }
    }
    this.updateAddButton();
  }

  private sortList(): void {
    const entries = [...this.nodes.values()].sort((a, b) =>
      a.node.name.localeCompare(b.node.name, undefined, { numeric: true }),
    );
    for (const e of entries) this.list.append(e.item);
  }

  private select(name: string, focus = true): void {
    const entry = this.nodes.get(name);
    if (!entry) return;
    this.selected = name;
    history.replaceState(null, "", `#${encodeURIComponent(name)}`);
    for (const e of this.nodes.values()) {
      this.renderItem(e);
      if (e !== entry) e.terminal?.setVisible(false);
    }
    this.ensureTerminal(entry);
    entry.terminal?.setVisible(true);
    if (focus) entry.terminal?.focus();
    this.renderToolbar();
    this.renderPlaceholder();
  }

  /** A running node gets its terminal the first time it is shown; it then stays connected. */
  private ensureTerminal(entry: NodeEntry): void {
    if (entry.terminal || entry.node.status !== "running" || this.ended) return;
    const name = entry.node.name;
    entry.terminal = new TerminalView(this.termHost, {
      path: entry.node.terminal,
      fontSize: this.fontSize,
      onState: (s) => this.onLinkState(name, s),
      onNotice: (m) => this.notice(`${entry.node.hostname}: ${m}`, "info"),
    });
    entry.terminal.setVisible(this.selected === name);
  }

  private onLinkState(name: string, s: LinkState): void {
    const entry = this.nodes.get(name);
    if (!entry) return;
    window.clearTimeout(entry.linkTimer);
    entry.link = s;
    if (s.kind === "connected" && s.resumed) {
      // "reconnected" stays a moment, then it is just "connected".
      entry.linkTimer = window.setTimeout(() => {
        entry.link = { kind: "connected", resumed: false };
        if (this.selected === name) this.renderToolbar();
      }, 4000);
    }
    if (this.selected === name) this.renderToolbar();
  }

  private updateAddButton(): void {
    const max = this.session?.max_nodes ?? Infinity;
    const full = this.nodes.size >= max;
    this.addButton.disabled = this.adding || full || this.ended;
    this.addButton.textContent = this.adding ? "Adding…" : "+ Add node";
    this.addButton.title = full ? `This session has the most nodes it may have (${max}).` : "";
  }

  // ---------------------------------------------------------------- events

  private connectEvents(): void {
    if (this.ended) return;
    const sock = new WebSocket(wsUrl(eventsPath(this.sid)));
    this.events = sock;
    sock.onmessage = (ev) => {
      if (sock !== this.events || typeof ev.data !== "string") return;
      let msg: SessionEvent;
      try {
        msg = JSON.parse(ev.data) as SessionEvent;
      } catch {
        return;
      }
      if (msg.type === "snapshot") {
        this.eventsAttempt = 0;
        this.setLive(null);
      }
      this.onEvent(msg);
    };
    sock.onclose = () => {
      if (sock !== this.events || this.ended) return;
      this.events = null;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.eventsAttempt);
      this.eventsAttempt++;
      this.setLive("Live updates lost: reconnecting…");
      this.eventsTimer = window.setTimeout(() => void this.refresh(false), delay);
    };
  }

  /** GET the session (first load, or after the events socket dropped), then listen again. */
  private async refresh(first: boolean): Promise<void> {
    this.eventsTimer = undefined;
    try {
      const s = await api.getSession(this.sid);
      this.applySnapshot(s);
      this.connectEvents();
    } catch (e) {
      if (e instanceof ApiError && e.notFound) {
        this.showEnded(first ? "missing" : "expired");
        return;
      }
      if (first) this.notice(errorText(e), "error");
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.eventsAttempt);
      this.eventsAttempt++;
      this.setLive("Cannot reach the server: retrying…");
      this.eventsTimer = window.setTimeout(() => void this.refresh(first), delay);
    }
  }

  private onEvent(msg: SessionEvent): void {
    switch (msg.type) {
      case "snapshot":
        this.applySnapshot(msg.session);
        break;
      case "node_added":
      case "node_updated":
        if (this.session) {
          const i = this.session.nodes.findIndex((n) => n.name === msg.node.name);
          if (i >= 0) this.session.nodes[i] = msg.node;
          else this.session.nodes.push(msg.node);
        }
        this.upsertNode(msg.node);
        this.updateAddButton();
        break;
      case "node_removed":
        if (this.session) this.session.nodes = this.session.nodes.filter((n) => n.name !== msg.name);
        this.removeNode(msg.name);
        break;
      case "stats":
        for (const [name, stats] of Object.entries(msg.nodes)) {
          const entry = this.nodes.get(name);
          if (!entry) continue;
          entry.node = { ...entry.node, stats };
          const line = entry.item.querySelector(".stats");
          line?.replaceWith(statsLine(entry.node));
        }
        break;
      case "progress":
        this.progress.textContent = msg.message;
        break;
      case "extended":
        if (this.session) this.session.expires_at = msg.expires_at;
        this.warned = false;
        this.tick();
        break;
      case "expiring":
        if (this.session) this.session.expires_at = msg.expires_at;
        this.tick();
        break;
      case "ended":
        this.showEnded(msg.reason);
        break;
    }
  }

  private setLive(text: string | null): void {
    this.liveState.textContent = text ?? "";
    this.liveState.hidden = !text;
  }

  private readonly onWake = () => {
    if (document.visibilityState === "hidden") return;
    for (const e of this.nodes.values()) e.terminal?.retryNow();
    if (!this.events && this.eventsTimer !== undefined && !this.ended) {
      window.clearTimeout(this.eventsTimer);
      void this.refresh(false);
    }
  };

  // ---------------------------------------------------------------- expiry

  private secsLeft(): number | null {
    if (!this.session) return null;
    return (Date.parse(this.session.expires_at) - (Date.now() + clockSkewMs)) / 1000;
  }

  private tick(): void {
    const left = this.secsLeft();
    if (left === null || this.ended) return;
    const s = this.session!;
    this.countdown.textContent = left > 0 ? `${formatClock(left)} left` : "ending…";
    this.countdown.setAttribute("aria-label", `session time left: ${formatClock(left)}`);
    const atMax = Date.parse(s.expires_at) >= Date.parse(s.max_expires_at) - 1000;
    this.extendButton.disabled = atMax || left <= 0;
    this.extendButton.title = atMax ? "This session cannot be extended any further." : "Extend the session";
    const warn = left <= WARN_SECS;
    this.countdown.classList.toggle("urgent", warn);
    if (warn) {
      this.warningText.textContent =
        left > 0
          ? `This session ends in ${formatClock(left)}. Its nodes and everything in them will be destroyed.`
          : "This session is ending…";
      this.warningExtend.hidden = atMax || left <= 0;
      // Announce it once (screen readers); later ticks only change the clock.
      if (!this.warned) {
        this.warned = true;
        this.announce.textContent = `This session ends in ${Math.max(1, Math.round(left / 60))} minutes unless you extend it.`;
      }
    }
    this.warning.hidden = !warn;
    // The server says "ended" at the end; if that message got lost, ask.
    if (left < -15 && !this.events && this.eventsTimer === undefined) void this.refresh(false);
  }

  private async extend(): Promise<void> {
    this.extendButton.disabled = true;
    try {
      const s = await api.extendSession(this.sid);
      if (this.session) {
        this.session.expires_at = s.expires_at;
        this.session.max_expires_at = s.max_expires_at;
      }
      this.warned = false;
      this.notice(`Extended: the session now ends at ${new Date(s.expires_at).toLocaleTimeString()}.`, "info");
    } catch (e) {
      this.notice(`Could not extend the session: ${errorText(e)}`, "error");
    }
    this.tick();
  }

  private showEnded(reason: string): void {
    if (this.ended && this.root.querySelector(".ended")) return;
    this.dispose();
    const why =
      reason === "deleted"
        ? "This session was ended."
        : reason === "missing"
          ? "This session does not exist: it has ended, or the link is wrong."
          : "This session reached its time limit.";
    const again = h("a", { class: "button primary big", href: "/" }, "Start a new session");
    this.root.replaceChildren(
      h(
        "main",
        { class: "ended", "data-test": "ended" },
        h("h1", {}, "Session ended"),
        h("p", {}, why),
        h("p", { class: "muted" }, "Its nodes and everything in them have been destroyed."),
        again,
      ),
    );
    document.title = "sandpit: session ended";
    again.focus();
  }

  // ---------------------------------------------------------------- actions

  private async addNode(): Promise<void> {
    if (this.adding) return;
    this.adding = true;
    this.updateAddButton();
    try {
      const n = await api.addNode(this.sid);
      this.upsertNode(n);
      this.select(n.name);
    } catch (e) {
      this.notice(`Could not add a node: ${errorText(e)}`, "error");
    } finally {
      this.adding = false;
      this.updateAddButton();
    }
  }

  private async deleteNode(name: string): Promise<void> {
    const entry = this.nodes.get(name);
    if (!entry) return;
    const ok = await this.confirm(
      `Delete ${entry.node.hostname}?`,
      "Its containers, images and files are destroyed. This cannot be undone.",
      "Delete node",
    );
    if (!ok) return;
    try {
      await api.deleteNode(this.sid, name);
      this.removeNode(name);
    } catch (e) {
      if (e instanceof ApiError && e.notFound) this.removeNode(name);
      else this.notice(`Could not delete ${entry.node.hostname}: ${errorText(e)}`, "error");
    }
  }

  private async endSession(): Promise<void> {
    const ok = await this.confirm(
      "End this session?",
      "Every node and everything in them is destroyed. This cannot be undone.",
      "End session",
    );
    if (!ok) return;
    try {
      await api.deleteSession(this.sid);
      this.showEnded("deleted");
    } catch (e) {
      if (e instanceof ApiError && e.notFound) this.showEnded("deleted");
      else this.notice(`Could not end the session: ${errorText(e)}`, "error");
    }
  }

  private async upload(files: File[]): Promise<void> {
    const entry = this.selected ? this.nodes.get(this.selected) : undefined;
    if (!files.length) return;
    if (!entry || entry.node.status !== "running") {
      this.notice("Choose a running node first, then upload.", "error");
      return;
    }
    const node = entry.node;
    for (const f of files) {
      const note = this.notice(`Uploading ${f.name} to ${node.hostname}… (${formatBytes(f.size)})`, "info", 0);
      try {
        const res = await api.upload(this.sid, node.name, f.name, f);
        note.remove();
        this.notice(`Uploaded ${f.name} to ${node.hostname}:${res.path} (${formatBytes(res.size)}).`, "info");
      } catch (e) {
        note.remove();
        this.notice(`Could not upload ${f.name}: ${errorText(e)}`, "error");
      }
    }
    entry.terminal?.focus();
  }

  private setupDrop(pane: HTMLElement): void {
    let depth = 0;
    const hasFiles = (ev: DragEvent) => Array.from(ev.dataTransfer?.types ?? []).includes("Files");
    pane.addEventListener("dragenter", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth++;
      const n = this.selected ? this.nodes.get(this.selected)?.node : undefined;
      this.dropOverlay.textContent = n
        ? `Drop to upload into ${n.hostname}:/root`
        : "Add a node first to upload files";
      this.dropOverlay.hidden = false;
    });
    pane.addEventListener("dragover", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      if (ev.dataTransfer) ev.dataTransfer.dropEffect = "copy";
    });
    pane.addEventListener("dragleave", (ev) => {
      if (!hasFiles(ev)) return;
      depth = Math.max(0, depth - 1);
      if (depth === 0) this.dropOverlay.hidden = true;
    });
    pane.addEventListener("drop", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth = 0;
      this.dropOverlay.hidden = true;
      void this.upload(Array.from(ev.dataTransfer?.files ?? []));
    });
  }

  private setFontSize(px: number): void {
    this.fontSize = Math.min(FONT_MAX, Math.max(FONT_MIN, px));
    localStorage.setItem(FONT_KEY, String(this.fontSize));
    for (const e of this.nodes.values()) e.terminal?.setFontSize(this.fontSize);
    this.fontLabel.textContent = `${this.fontSize}px`;
  }

  // ---------------------------------------------------------------- messages

  /** A message above the terminal; errors stay until dismissed, the rest fade after a while. */
  private notice(text: string, kind: "info" | "error", ttlMs = 6000): HTMLElement {
    const close = h("button", { type: "button", class: "icon", "aria-label": "Dismiss" }, "✕");
    const el = h(
      "div",
      { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
      h("span", {}, text),
      close,
    );
    close.addEventListener("click", () => el.remove());
    this.notices.append(el);
    while (this.notices.children.length > 4) this.notices.firstElementChild?.remove();
    if (kind === "info" && ttlMs > 0) window.setTimeout(() => el.remove(), ttlMs);
    return el;
  }

  private confirm(title: string, body: string, action: string): Promise<boolean> {
    return new Promise((resolve) => {
      const cancel = h("button", { type: "button", class: "secondary", value: "cancel" }, "Cancel");
      const ok = h("button", { type: "button", class: "danger", value: "ok" }, action);
      replace(
        this.dialog,
        h("h2", {}, title),
        h("p", {}, body),
        h("div", { class: "dialog-buttons" }, cancel, ok),
      );
      const done = (v: boolean) => {
        this.dialog.onclose = null;
        if (this.dialog.open) this.dialog.close();
        resolve(v);
        if (this.selected) this.nodes.get(this.selected)?.terminal?.focus();
      };
      cancel.addEventListener("click", () => done(false));
      ok.addEventListener("click", () => done(true));
      this.dialog.onclose = () => done(false); // Escape
      this.dialog.showModal();
      cancel.focus();
    });
  }

  /** Read-only hooks for the browser tests (web/tests): the terminals' text. */
  private exposeForTests(): void {
    (window as unknown as { sandpit: unknown }).sandpit = {
      sid: this.sid,
      selected: () => this.selected,
      nodes: () => [...this.nodes.keys()],
      text: (name: string) => this.nodes.get(name)?.terminal?.text() ?? null,
      /** Breaks a terminal's connection as a network drop would; it reconnects by itself. */
      drop: (name: string) => this.nodes.get(name)?.terminal?.dropConnection(),
    };
  }
}

function statsLine(n: SandpitNode): HTMLElement {
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

function linkText(s: LinkState | null): string {
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

function errorText(e: unknown): string {
  return e instanceof ApiError ? e.message : e instanceof Error ? e.message : String(e);
}
