// A client of the play-with-docker API for sandpit's browser tests, written here from the
// documented surface (docs/pwd.md; the SDK's calling conventions in ../shared/research/
// pwd-sdk.md), not the SDK itself: XHRs with credentials and `X-Requested-With`, `POST /`
// then everything at `<scheme>//<hostname>`, one JSON-envelope WebSocket for all terminals,
// code blocks that type on click, `.direct.` port links and uploads from data attributes.
/* global Terminal */
(function () {
  "use strict";

  function request(method, url, data, cb) {
    const r = new XMLHttpRequest();
    r.open(method, url, true);
    r.withCredentials = true;
    r.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    if (typeof data === "string") r.setRequestHeader("Content-type", "application/x-www-form-urlencoded");
    else if (data && !(data instanceof FormData)) r.setRequestHeader("Content-type", "application/json");
    r.onerror = () => cb(new Error(`${method} ${url}: network error (status ${r.status})`));
    r.onload = () => cb(r.status >= 200 && r.status < 300 ? null : new Error(`${method} ${url}: HTTP ${r.status} ${r.responseText}`), r);
    r.send(data && typeof data === "object" && !(data instanceof FormData) ? JSON.stringify(data) : data);
  }

  const pwd = {
    baseUrl: "",
    sessionId: null,
    instances: {}, // name -> instance, with `terms`
    buffers: {}, // output of instances without a terminal yet
    ports: {}, // name -> published ports
    socket: null,
    lastError: null,
    ready: false,

    /** Creates a session and one instance and terminal per `terms` entry, in order. */
    newSession(terms, opts, cb) {
      const done = (err) => {
        if (err) pwd.lastError = String(err.message || err);
        if (cb) cb(err);
      };
      pwd.baseUrl = opts.baseUrl;
      request("POST", `${pwd.baseUrl}/`, "session-duration=90m", (err, r) => {
        if (err) return done(err);
        const s = JSON.parse(r.responseText);
        pwd.baseUrl = `${pwd.baseUrl.split("/")[0]}//${s.hostname}`;
        pwd.sessionId = s.session_id;
        pwd.connect();
        const next = (i) => {
          if (i === terms.length) {
            pwd.ready = true;
            return done(null);
          }
          pwd.createInstance({ Hostname: `node${i + 1}` }, (err, inst) => {
            if (err) return done(err);
            pwd.createTerminal(terms[i], inst.name);
            next(i + 1);
          });
        };
        next(0);
      });
    },

    connect() {
      const u = new URL(pwd.baseUrl);
      const ws = new WebSocket(`${u.protocol === "https:" ? "wss:" : "ws:"}//${u.host}/sessions/${pwd.sessionId}/ws/`);
      pwd.socket = ws;
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        const [a, b] = m.args;
        if (m.name === "instance terminal out") {
          const inst = pwd.instances[a];
          if (inst && inst.terms.length) inst.terms.forEach((t) => t.write(b));
          else pwd.buffers[a] = (pwd.buffers[a] || "") + b;
        } else if (m.name === "instance viewport resize") {
          Object.values(pwd.instances).forEach((i) => i.terms.forEach((t) => t.resize(a, b)));
        } else if (m.name === "instance docker ports") {
          pwd.ports[a.instance] = a.ports;
        }
      };
      // Reconnects like the SDK's ReconnectingWebSocket, until the session ends.
      ws.onclose = (ev) => {
        if (pwd.socket === ws && ev.code !== 1000 && pwd.sessionId) setTimeout(() => pwd.connect(), 1000);
      };
      ws.onopen = () => ws.send(JSON.stringify({ name: "instance viewport resize", args: [100, 30] }));
    },

    emit(name, ...args) {
      if (pwd.socket && pwd.socket.readyState === WebSocket.OPEN) pwd.socket.send(JSON.stringify({ name, args }));
    },

    createInstance(opts, cb) {
      request("POST", `${pwd.baseUrl}/sessions/${pwd.sessionId}/instances`, opts, (err, r) => {
        if (err) return cb(err);
        const inst = JSON.parse(r.responseText);
        inst.terms = [];
        pwd.instances[inst.name] = inst;
        cb(null, inst);
      });
    },

    createTerminal(term, name) {
      const inst = pwd.instances[name];
      document.querySelectorAll(term.selector).forEach((el) => {
        const t = new Terminal({ cols: 100, rows: 30, scrollback: 5000 });
        t.open(el);
        t.onData((d) => pwd.emit("instance terminal in", name, d));
        inst.terms.push(t);
      });
      if (pwd.buffers[name]) {
        inst.terms.forEach((t) => t.write(pwd.buffers[name]));
        delete pwd.buffers[name];
      }
      // `#term1` names the terminal's element; code blocks carry the class `term1`, port
      // links and upload buttons name `.term1`.
      const cls = term.selector.replace(/^[.#]/, "");
      // Code blocks: a click types the block's text.
      document.querySelectorAll(`code[class*="${cls}"]`).forEach((code) =>
        code.parentElement.addEventListener("click", () => pwd.emit("instance terminal in", name, code.innerText)),
      );
      // Port links open {proxy_host}-{port}.direct.{host of the base URL}{href}.
      document.querySelectorAll(`[data-term*="${cls}"]`).forEach((a) => {
        const link = `${a.getAttribute("data-protocol") || "http:"}//${inst.proxy_host}-${a.getAttribute("data-port")}.direct.${pwd.baseUrl.split("/")[2]}${a.getAttribute("href")}`;
        a.addEventListener("click", (ev) => {
          ev.preventDefault();
          window.open(link, "_blank");
        });
      });
      // Uploads: data-upload-src="name:base64" into data-upload-path.
      document.querySelectorAll(`[data-upload-term*="${cls}"]`).forEach((el) =>
        el.addEventListener("click", () => {
          const [file, b64] = el.getAttribute("data-upload-src").split(":");
          const form = new FormData();
          form.append("file", new Blob([atob(b64)], { type: "text/plain" }), file);
          const q = new URLSearchParams({ url: "", path: el.getAttribute("data-upload-path") || "" });
          request("POST", `${pwd.baseUrl}/sessions/${pwd.sessionId}/instances/${name}/uploads?${q}`, form, (err) => {
            el.setAttribute("data-uploaded", err ? "failed" : "ok");
          });
        }),
      );
    },

    exec(name, command, cb) {
      request("POST", `${pwd.baseUrl}/sessions/${pwd.sessionId}/instances/${name}/exec`, { command }, (err, r) =>
        cb(err, r && JSON.parse(r.responseText || "null")),
      );
    },

    closeSession(cb) {
      request("DELETE", `${pwd.baseUrl}/sessions/${pwd.sessionId}`, null, (err, r) => {
        if (!err) pwd.sessionId = null;
        cb(err, r && r.status);
      });
    },
  };

  // Read-only hooks for the tests.
  window.pwdTest = {
    /** The text of instance `i`'s terminal (0-based), scrollback included. */
    text(i) {
      const inst = pwd.instances[`node${i + 1}`];
      if (!inst || !inst.terms.length) return null;
      const buf = inst.terms[0].buffer.active;
      const lines = [];
      for (let n = 0; n < buf.length; n++) lines.push(buf.getLine(n).translateToString(true));
      return lines.join("\n");
    },
  };
  window.pwd = pwd;
})();
