// The session page (/s/{sid}): its layout, the nodes and which one is shown, one terminal per
// node, the live state and the actions (add, delete, end, extend, upload). Live state comes
// from the session's events WebSocket (docs/api.md); after a drop, a GET tells whether the
// session still exists before the events socket is opened again. How a node looks is in
// nodes.ts, the countdown and the ended screen in expiry.ts, uploads in uploads.ts.

import { ApiError, api, eventsPath, wsUrl } from "./api";
import { h, replace } from "./dom";
import { Countdown, type EndedBecause, endedScreen } from "./expiry";
import { ImagePicker } from "./images";
import { linkText, nodeCard, nodeTitle, notRunning, portLinks, statsLine } from "./nodes";
import { Confirm, Notices, errorText } from "./notices";
import { BACKOFF_FIRST_MS, BACKOFF_MAX_MS } from "./protocol";
import { type LinkState, TerminalView } from "./terminal";
import { acceptDrops, uploadFiles } from "./uploads";
import type { Node as SandpitNode, Session, SessionEvent } from "./wire";

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

  // Chrome
  private readonly countdown = new Countdown(() => void this.extend());
  private readonly liveState = h("span", { class: "live-state", "aria-live": "polite", hidden: true });
  private readonly notices = new Notices();
  private readonly list = h("ul", { class: "node-list", "aria-label": "Nodes" });
  private readonly addButton = h(
    "button",
    { type: "button", class: "primary", "data-test": "add-node" },
    "+ Add node",
  );
  private readonly imagePicker = new ImagePicker();
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
  private readonly confirm = new Confirm(() => {
    if (this.selected) this.nodes.get(this.selected)?.terminal?.focus();
  });
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
    void this.imagePicker.load();
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
    acceptDrops(
      pane,
      this.dropOverlay,
      () => (this.selected ? this.nodes.get(this.selected)?.node : undefined),
      (files) => void this.upload(files),
    );

    this.root.replaceChildren(
      h(
        "div",
        { class: "session" },
        h(
          "header",
          { class: "topbar" },
          h("a", { class: "logo", href: "/", "aria-label": "sandpit home" }, "sandpit"),
          h("div", { class: "expiry" }, this.countdown.clock, this.countdown.extendButton),
          this.liveState,
          h("div", { class: "spacer" }),
          endButton,
        ),
        this.countdown.warning,
        h(
          "div",
          { class: "body" },
          h(
            "aside",
            { class: "sidebar" },
            h("div", { class: "sidebar-head" }, h("h2", {}, "Nodes"), this.addButton),
            this.imagePicker.el,
            this.list,
            this.progress,
          ),
          h("div", { class: "main" }, this.notices.el, pane),
        ),
      ),
      this.fileInput,
      this.confirm.dialog,
      this.countdown.announce,
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
      nodeTitle(n),
      h("span", { class: "link-state", "data-test": "link-state", "aria-live": "polite" }, linkText(entry.link)),
      portLinks(n),
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
    } else {
      content = notRunning(entry.node);
    }
    this.placeholder.hidden = content.length === 0;
    replace(this.placeholder, content);
  }

  private renderItem(entry: NodeEntry): void {
    const n = entry.node;
    replace(
      entry.item,
      nodeCard(
        n,
        this.selected === n.name,
        () => this.select(n.name),
        () => void this.deleteNode(n.name),
      ),
    );
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
        this.countdown.extended();
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

  private tick(): void {
    if (!this.session || this.ended) return;
    const left = this.countdown.show(this.session);
    // The server says "ended" at the end; if that message got lost, ask.
    if (left < -15 && !this.events && this.eventsTimer === undefined) void this.refresh(false);
  }

  private async extend(): Promise<void> {
    this.countdown.extendButton.disabled = true;
    try {
      const s = await api.extendSession(this.sid);
      if (this.session) {
        this.session.expires_at = s.expires_at;
        this.session.max_expires_at = s.max_expires_at;
      }
      this.countdown.extended();
      this.notice(`Extended: the session now ends at ${new Date(s.expires_at).toLocaleTimeString()}.`, "info");
    } catch (e) {
      this.notice(`Could not extend the session: ${errorText(e)}`, "error");
    }
    this.tick();
  }

  private showEnded(because: EndedBecause): void {
    if (this.ended && this.root.querySelector(".ended")) return;
    this.dispose();
    const screen = endedScreen(because);
    this.root.replaceChildren(screen);
    document.title = "sandpit: session ended";
    screen.querySelector("a")?.focus();
  }

  // ---------------------------------------------------------------- actions

  private async addNode(): Promise<void> {
    if (this.adding) return;
    this.adding = true;
    this.updateAddButton();
    try {
      const n = await api.addNode(this.sid, this.imagePicker.value());
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
    const ok = await this.confirm.ask(
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
    const ok = await this.confirm.ask(
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
    await uploadFiles(this.sid, entry.node, files, (text, kind, ttlMs) => this.notice(text, kind, ttlMs));
    entry.terminal?.focus();
  }

  private setFontSize(px: number): void {
    this.fontSize = Math.min(FONT_MAX, Math.max(FONT_MIN, px));
    localStorage.setItem(FONT_KEY, String(this.fontSize));
    for (const e of this.nodes.values()) e.terminal?.setFontSize(this.fontSize);
    this.fontLabel.textContent = `${this.fontSize}px`;
  }

  private notice(text: string, kind: "info" | "error", ttlMs?: number): HTMLElement {
    return this.notices.show(text, kind, ttlMs);
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
