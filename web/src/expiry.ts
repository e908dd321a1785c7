// A session's end: the countdown in the top bar with its Extend button, the warning in the
// last 5 minutes (announced once to screen readers), and the "session ended" screen. Times
// are the server's (`expires_at`), read with the clock skew measured from its answers.

import { clockSkewMs } from "./api";
import { formatClock, h } from "./dom";
import type { EndReason, Session } from "./wire";

/** Warn this long before the end (the server's `expiring` event comes at the same time). */
const WARN_SECS = 5 * 60;

/** Why the page shows the ended screen: the server's reason, or the session was never found. */
export type EndedBecause = EndReason | "missing";

export class Countdown {
  readonly clock = h("span", { class: "countdown", "data-test": "countdown" });
  readonly extendButton = h("button", { type: "button", class: "secondary", "data-test": "extend" }, "Extend");
  private readonly warningText = h("span", {});
  private readonly warningExtend = h("button", { type: "button", class: "secondary" }, "Extend");
  readonly warning = h("div", { class: "warning", hidden: true }, this.warningText, this.warningExtend);
  /** Screen-reader announcements (role=alert). */
  readonly announce = h("div", { class: "sr-only", role: "alert" });
  private warned = false;

  constructor(onExtend: () => void) {
    this.extendButton.addEventListener("click", onExtend);
    this.warningExtend.addEventListener("click", onExtend);
  }

  /** The session got a new end: warn (and announce) again when it comes near. */
  extended(): void {
    this.warned = false;
  }

  /** Shows the time left of `s`; returns it in seconds. */
  show(s: Session): number {
    const left = (Date.parse(s.expires_at) - (Date.now() + clockSkewMs)) / 1000;
    this.clock.textContent = left > 0 ? `${formatClock(left)} left` : "ending…";
    this.clock.setAttribute("aria-label", `session time left: ${formatClock(left)}`);
    const atMax = Date.parse(s.expires_at) >= Date.parse(s.max_expires_at) - 1000;
    this.extendButton.disabled = atMax || left <= 0;
    this.extendButton.title = atMax ? "This session cannot be extended any further." : "Extend the session";
    const warn = left <= WARN_SECS;
    this.clock.classList.toggle("urgent", warn);
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
    return left;
  }
}

/** The screen that replaces the session page once the session is gone. */
export function endedScreen(because: EndedBecause): HTMLElement {
  const why: Record<EndedBecause, string> = {
    deleted: "This session was ended.",
    missing: "This session does not exist: it has ended, or the link is wrong.",
    expired: "This session reached its time limit.",
    failed: "This session could not be set up, so it was ended.",
  };
  return h(
    "main",
    { class: "ended", "data-test": "ended" },
    h("h1", {}, "Session ended"),
    h("p", {}, why[because] ?? why.expired),
    h("p", { class: "muted" }, "Its nodes and everything in them have been destroyed."),
    h("a", { class: "button primary big", href: "/" }, "Start a new session"),
  );
}
