// The landing page: one sentence on what this is, Start, the templates, the session length.
// A stack link (`/?stack=URL&stack_name=NAME`, play-with-docker's) says what it deploys, and
// Start makes that session instead: the server fetches the file (only from the sources its
// operator allows) and node1 runs the deploy in its terminal.

import { ApiError, TEMPLATES, api } from "./api";
import type { Session, StackRequest, TemplateId } from "./wire";
import { formatDuration, h } from "./dom";

/** The server's default session length when it does not say (docs/api.md: 4 hours). */
const DEFAULT_SESSION_SECS = 4 * 3600;

export function renderLanding(root: HTMLElement, onStarted: (s: Session) => void): void {
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const status = h("p", { class: "status", "aria-live": "polite" });
  const length = h("span", {}, formatDuration(DEFAULT_SESSION_SECS));
  const buttons: HTMLButtonElement[] = [];
  const stack = stackOfLink(new URLSearchParams(location.search));

  async function start(template: TemplateId | undefined, button: HTMLButtonElement) {
    for (const b of buttons) b.disabled = true;
    error.hidden = true;
    button.classList.add("busy");
    const t0 = performance.now();
    const nodes = template ? TEMPLATES.find((t) => t.id === template)!.nodes : 0;
    const tick = () => {
      const secs = Math.round((performance.now() - t0) / 1000);
      status.textContent = template
        ? `Starting ${nodes} nodes and forming the swarm… ${secs ? `${secs} s` : ""}`
        : stack
          ? `Starting a swarm manager for the stack… ${secs ? `${secs} s` : ""}`
          : "Starting your session…";
    };
    tick();
    const timer = window.setInterval(tick, 1000);
    try {
      const session = await api.createSession(template ? { template } : stack ? { stack } : {});
      onStarted(session);
    } catch (e) {
      error.textContent = `Could not start a session: ${e instanceof ApiError ? e.message : String(e)}`;
      error.hidden = false;
      status.textContent = "";
      for (const b of buttons) b.disabled = false;
    } finally {
      window.clearInterval(timer);
      button.classList.remove("busy");
    }
  }

  const startButton = h(
    "button",
    { class: "primary big", type: "button", "data-test": "start" },
    "Start",
  );
  startButton.addEventListener("click", () => start(undefined, startButton));
  buttons.push(startButton);

  const templateButtons = TEMPLATES.map((t) => {
    const b = h(
      "button",
      { class: "template", type: "button", "data-template": t.id },
      h("strong", {}, t.label),
      h("span", {}, `${t.nodes} nodes, already joined into a swarm`),
    );
    b.addEventListener("click", () => start(t.id, b));
    buttons.push(b);
    return h("li", {}, b);
  });

  // A stack link makes one kind of session: the templates are not offered beside it.
  const choices = stack
    ? [
        h(
          "p",
          { class: "stack-note", "data-test": "stack-note" },
          "This link deploys the stack ",
          h("strong", {}, stack.name ?? "pwd"),
          " from ",
          h("code", {}, stack.url ?? ""),
          " on a swarm manager of a new session.",
        ),
      ]
    : [h("h2", {}, "Or start with a swarm"), h("ul", { class: "templates" }, templateButtons)];

  root.replaceChildren(
    h(
      "main",
      { class: "landing" },
      h("h1", { class: "logo" }, "sandpit"),
      h(
        "p",
        { class: "lead" },
        "A Docker playground in your browser: press Start and get Linux nodes, each with its own Docker engine and a shell right here.",
      ),
      ...(stack ? choices : []),
      h("div", { class: "start-row" }, startButton, status),
      error,
      ...(stack ? [] : choices),
      h(
        "p",
        { class: "fineprint" },
        "Sessions last ",
        length,
        " and can be extended. Anyone with the session's link can use it. When it ends, its nodes and everything in them are destroyed.",
      ),
    ),
  );
  document.title = "sandpit: a Docker playground in your browser";
  startButton.focus();

  // The server may say how long its sessions last (an optional field of /healthz).
  fetch("/healthz")
    .then((r) => (r.ok ? r.json() : null))
    .then((v: { session_secs?: unknown } | null) => {
      if (v && typeof v.session_secs === "number" && v.session_secs > 0) {
        length.textContent = formatDuration(v.session_secs);
      }
    })
    .catch(() => {});
}

/** The stack a link names (`?stack=URL&stack_name=NAME`), or null. The page never fetches it. */
function stackOfLink(q: URLSearchParams): StackRequest | null {
  const url = q.get("stack")?.trim();
  if (!url) return null;
  const name = q.get("stack_name")?.trim();
  return name ? { url, name } : { url };
}
