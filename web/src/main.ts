// Entry point: routes "/" to the landing page and "/s/{sid}" to the session page. The URL is
// the capability: reloading or sharing /s/{sid} returns to the same session.

import "@xterm/xterm/css/xterm.css";
import "./app.css";
import { SESSION_ID } from "./api";
import { h } from "./dom";
import { renderLanding } from "./landing";
import { SessionPage } from "./session";
import type { Session } from "./wire";

const root = document.getElementById("app")!;
let page: SessionPage | null = null;

function route(initial: Session | null = null): void {
  page?.dispose();
  page = null;
  const m = /^\/s\/([^/]+)\/?$/.exec(location.pathname);
  if (!m) {
    renderLanding(root, (s) => {
      history.pushState(null, "", `/s/${s.id}`);
      route(s);
    });
    return;
  }
  const sid = decodeURIComponent(m[1]);
  if (!SESSION_ID.test(sid)) {
    root.replaceChildren(
      h(
        "main",
        { class: "ended" },
        h("h1", {}, "No such session"),
        h("p", {}, "This link does not name a session. Check that it was copied whole."),
        h("a", { class: "button primary big", href: "/" }, "Start a new session"),
      ),
    );
    return;
  }
  page = new SessionPage(root, sid, initial);
}

window.addEventListener("popstate", () => route());
route();
