// One node's terminal in the page: an xterm.js instance and its WebSocket (docs/protocol.md).
// It tracks the stream offset so that a reconnect resumes exactly where it stopped, queues
// what is typed while disconnected and sends it once after the next hello, acknowledges
// processed output for flow control, and follows its pane's size.

import { Terminal, type ITheme } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { WebLinksAddon } from "@xterm/addon-web-links";
import { Unicode11Addon } from "@xterm/addon-unicode11";
import { wsUrl } from "./api";
import {
  ACK_EVERY,
  BACKOFF_FIRST_MS,
  BACKOFF_MAX_MS,
  type ClientMessage,
  clampSize,
  parseServerMessage,
  terminalQuery,
} from "./protocol";

export type LinkState =
  | { kind: "connecting" }
  | { kind: "connected"; resumed: boolean }
  | { kind: "reconnecting"; inMs: number; attempt: number }
  | { kind: "closed"; reason: string };

const THEME: ITheme = {
  background: "#16181d",
  foreground: "#e6e6e6",
  cursor: "#f0f0f0",
  cursorAccent: "#16181d",
  selectionBackground: "#3b5b86",
  black: "#1e2127",
  red: "#ef6b73",
  green: "#8fc97a",
  yellow: "#e5c07b",
  blue: "#61afef",
  magenta: "#d291e4",
  cyan: "#56c8d8",
  white: "#dcdfe4",
  brightBlack: "#7f848e",
  brightRed: "#ff7a85",
  brightGreen: "#a5e075",
  brightYellow: "#f0d58a",
  brightBlue: "#74bdf7",
  brightMagenta: "#de9df0",
  brightCyan: "#6fd6e4",
  brightWhite: "#ffffff",
};

/** Most input kept while disconnected; beyond it the oldest is dropped (and said so). */
const MAX_PENDING = 4 * 1024 * 1024;

const encoder = new TextEncoder();
const isMac = /Mac|iPhone|iPad/.test(navigator.platform);

export interface TerminalOptions {
  /** Path of the terminal WebSocket (Node.terminal). */
  path: string;
  fontSize: number;
  onState: (s: LinkState) => void;
  /** A control message to show the user (refused input, skipped output). */
  onNotice: (message: string) => void;
}

export class TerminalView {
  readonly term: Terminal;
  readonly element: HTMLElement;
  private readonly fit = new FitAddon();
  private ws: WebSocket | null = null;
  /** Offset of the next byte we will get; null before the first hello. */
  private offset: number | null = null;
  private stream: string | null = null;
  private acked = 0;
  /** Input typed while no hello'd connection was open: sent once, after the next hello. */
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private ready = false;
  private closedForGood = false;
  private disposed = false;
  private attempt = 0;
  private retryTimer: number | undefined;
  private everConnected = false;
  private resizeObserver: ResizeObserver;
  private fitQueued = false;
  private visible = false;
  private copyTimer: number | undefined;

  constructor(
    parent: HTMLElement,
    private readonly opts: TerminalOptions,
  ) {
    this.element = document.createElement("div");
    this.element.className = "term";
    parent.append(this.element);
    this.term = new Terminal({
      allowProposedApi: true, // the unicode11 addon uses the proposed `unicode` API
      fontFamily: '"DejaVu Sans Mono", "Cascadia Mono", Menlo, Consolas, monospace',
      fontSize: opts.fontSize,
      scrollback: 10_000,
      cursorBlink: true,
      macOptionIsMeta: true,
      rightClickSelectsWord: true,
      theme: THEME,
    });
    this.term.loadAddon(this.fit);
    this.term.loadAddon(
      new WebLinksAddon((_ev, uri) => window.open(uri, "_blank", "noopener,noreferrer")),
    );
    this.term.loadAddon(new Unicode11Addon());
    this.term.unicode.activeVersion = "11";
    this.term.open(this.element);
    this.term.attachCustomKeyEventHandler((ev) => this.onKey(ev));
    this.term.onData((d) => this.input(encoder.encode(d)));
    // onBinary: bytes as a "binary string" (mouse reports in X10 mode), one char per byte.
    this.term.onBinary((d) => this.input(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ cols, rows }) => this.sendResize(cols, rows));
    // Selecting copies, as in most terminals.
    this.term.onSelectionChange(() => {
      window.clearTimeout(this.copyTimer);
      this.copyTimer = window.setTimeout(() => {
        if (this.term.hasSelection()) copyText(this.term.getSelection());
      }, 200);
    });
    this.resizeObserver = new ResizeObserver(() => this.queueFit());
    this.resizeObserver.observe(this.element);
    this.connect();
  }

  /** Shows or hides this terminal; the shown one follows its pane and becomes the active viewer. */
  setVisible(visible: boolean): void {
    this.visible = visible;
    this.element.hidden = !visible;
    if (visible) {
      this.queueFit();
      this.term.focus();
    }
  }

  setFontSize(px: number): void {
    this.term.options.fontSize = px;
    this.queueFit();
  }

  focus(): void {
    this.term.focus();
  }

  /** Everything in the buffer (scrollback and screen) as text, one line per row. */
  text(): string {
    const buf = this.term.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < buf.length; i++) {
      const line = buf.getLine(i);
      if (!line) continue;
      const s = line.translateToString(true);
      if (line.isWrapped && lines.length) lines[lines.length - 1] += s;
      else lines.push(s);
    }
    return lines.join("\n");
  }

  /** Connect again now if we are waiting to (the page woke up, the network came back). */
  retryNow(): void {
    if (this.retryTimer !== undefined && !this.closedForGood && !this.disposed) {
      window.clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.connect();
    }
  }

  /** Closes the current connection without ending the terminal: it reconnects with `since`. */
  dropConnection(): void {
    this.ws?.close(4000, "dropped by the page");
  }

  /** Whether the server said this terminal closed (see `reopen`). */
  get isClosed(): boolean {
    return this.closedForGood && !this.disposed;
  }

  /**
   * Connects again after a `closed`. The server also says `closed` when it shuts down for a
   * restart; the page calls this once a fresh snapshot shows the node still running.
   */
  reopen(): void {
    if (!this.isClosed) return;
    this.closedForGood = false;
    this.attempt = 0;
    window.clearTimeout(this.retryTimer);
    this.connect();
  }

  /** The terminal is gone for good (node deleted, session ended). */
  close(reason: string): void {
    this.closedForGood = true;
    window.clearTimeout(this.retryTimer);
    this.ws?.close(1000);
    this.opts.onState({ kind: "closed", reason });
  }

  dispose(): void {
    this.disposed = true;
    this.closedForGood = true;
    window.clearTimeout(this.retryTimer);
    this.resizeObserver.disconnect();
    this.ws?.close(1000);
    this.ws = null;
    this.term.dispose();
    this.element.remove();
  }

  private connect(): void {
    this.ready = false;
    this.opts.onState({ kind: "connecting" });
    const q =
      this.offset === null || this.stream === null
        ? ""
        : terminalQuery({ since: this.offset, stream: this.stream });
    const sock = new WebSocket(wsUrl(this.opts.path + q));
    sock.binaryType = "arraybuffer";
    this.ws = sock;
    sock.onmessage = (ev) => {
      if (sock !== this.ws) return;
      if (typeof ev.data === "string") this.control(ev.data, sock);
      else this.output(new Uint8Array(ev.data as ArrayBuffer), sock);
    };
    sock.onclose = () => {
      if (sock !== this.ws) return;
      this.ws = null;
      this.ready = false;
      if (this.closedForGood || this.disposed) return;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
      this.attempt++;
      this.opts.onState({ kind: "reconnecting", inMs: delay, attempt: this.attempt });
      this.retryTimer = window.setTimeout(() => {
        this.retryTimer = undefined;
        this.connect();
      }, delay);
    };
  }

  private control(text: string, sock: WebSocket): void {
    const msg = parseServerMessage(text);
    if (!msg) return;
    switch (msg.type) {
      case "hello": {
        const resumed = msg.offset === this.offset && msg.stream === this.stream;
        // A different stream, or a replay from elsewhere than where we stopped: start over.
        if (!resumed) this.term.reset();
        this.offset = msg.offset;
        this.stream = msg.stream;
        this.acked = msg.offset;
        this.send({ type: "ack", offset: msg.offset }, sock);
        this.ready = true;
        this.attempt = 0;
        if (!msg.readonly) {
          if (this.visible) this.fitNow();
          // Only the shown terminal claims the PTY's size (it makes us the active viewer).
          if (this.visible) this.sendResize(this.term.cols, this.term.rows);
        }
        this.flushPending(sock);
        this.opts.onState({ kind: "connected", resumed: this.everConnected });
        this.everConnected = true;
        break;
      }
      case "skipped":
        this.offset = msg.to;
        this.opts.onNotice("output skipped: the terminal printed more than the server keeps");
        break;
      case "restarted":
        // The old shell may have left the alternate screen or odd modes on.
        this.term.write("\x1b[?1049l\x1b[0m\x1b[?25h");
        break;
      case "closed":
        this.closedForGood = true;
        this.opts.onState({ kind: "closed", reason: msg.reason });
        break;
      case "error":
        this.opts.onNotice(msg.message);
        break;
      case "resized":
      case "pong":
        break;
    }
  }

  private output(data: Uint8Array, sock: WebSocket): void {
    if (this.offset === null) return; // no hello yet: cannot happen with a correct server
    this.offset += data.byteLength;
    const end = this.offset;
    this.term.write(data, () => {
      if (end - this.acked >= ACK_EVERY && sock === this.ws) {
        this.acked = end;
        this.send({ type: "ack", offset: end }, sock);
      }
    });
  }

  private input(bytes: Uint8Array): void {
    // While closed, keep it: if the terminal is reopened (the server restarted) it is sent then.
    if (this.disposed) return;
    const sock = this.ws;
    if (this.ready && sock && sock.readyState === WebSocket.OPEN) {
      sock.send(bytes);
      return;
    }
    this.pending.push(bytes);
    this.pendingBytes += bytes.byteLength;
    while (this.pendingBytes > MAX_PENDING && this.pending.length > 1) {
      this.pendingBytes -= this.pending.shift()!.byteLength;
    }
  }

  /** Sends what was typed while disconnected, as one message, exactly once. */
  private flushPending(sock: WebSocket): void {
    if (!this.pending.length) return;
    const all = new Uint8Array(this.pendingBytes);
    let at = 0;
    for (const chunk of this.pending) {
      all.set(chunk, at);
      at += chunk.byteLength;
    }
    this.pending = [];
    this.pendingBytes = 0;
    sock.send(all);
  }

  private send(msg: ClientMessage, sock = this.ws): void {
    if (sock && sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify(msg));
  }

  private sendResize(cols: number, rows: number): void {
    if (!this.ready || !this.visible) return;
    this.send({ type: "resize", cols: clampSize(cols), rows: clampSize(rows) });
  }

  private queueFit(): void {
    if (this.fitQueued) return;
    this.fitQueued = true;
    requestAnimationFrame(() => {
      this.fitQueued = false;
      this.fitNow();
    });
  }

  private fitNow(): void {
    if (!this.visible || this.disposed) return;
    // proposeDimensions is undefined while the element has no size (hidden, not laid out).
    const dims = this.fit.proposeDimensions();
    if (!dims || !Number.isFinite(dims.cols) || !Number.isFinite(dims.rows)) return;
    if (dims.cols < 2 || dims.rows < 1) return;
    this.fit.fit();
  }

  /** Copy and paste keys; false means "not for xterm": the browser's default runs. */
  private onKey(ev: KeyboardEvent): boolean {
    if (ev.type !== "keydown") return true;
    const key = ev.key.toLowerCase();
    // Paste: Ctrl+V / Cmd+V / Ctrl+Shift+V / Shift+Insert. Let the browser fire its paste
    // event on xterm's textarea; xterm turns it into input (bracketed if the shell asks).
    if ((key === "v" && (ev.ctrlKey || ev.metaKey) && !ev.altKey) ||
        (ev.key === "Insert" && ev.shiftKey)) {
      return false;
    }
    // Copy: Cmd+C on a Mac, Ctrl+Shift+C or Ctrl+Insert elsewhere (Ctrl+C stays SIGINT).
    if ((isMac && ev.metaKey && key === "c") ||
        (ev.ctrlKey && ev.shiftKey && key === "c") ||
        (ev.ctrlKey && ev.key === "Insert")) {
      if (this.term.hasSelection()) copyText(this.term.getSelection());
      ev.preventDefault();
      return false;
    }
    return true;
  }
}

/** Puts text on the clipboard: the async API where allowed (secure contexts), else execCommand. */
function copyText(text: string): void {
  if (!text) return;
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).catch(() => legacyCopy(text));
  } else {
    legacyCopy(text);
  }
}

function legacyCopy(text: string): void {
  const active = document.activeElement as HTMLElement | null;
  const ta = document.createElement("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.style.position = "fixed";
  ta.style.opacity = "0";
  document.body.append(ta);
  ta.select();
  try {
    document.execCommand("copy");
  } catch {
    // nothing more we can do without clipboard permissions
  }
  ta.remove();
  active?.focus();
}
