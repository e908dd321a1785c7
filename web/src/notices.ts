// Telling the user things on the session page: notices above the terminal (errors stay until
// dismissed, the rest fade) and the modal confirmation before anything destructive.

import { ApiError } from "./api";
import { h, replace } from "./dom";

export type NoticeKind = "info" | "error";

export class Notices {
  readonly el = h("div", { class: "notices", "aria-live": "polite" });

  /** Shows a message; `ttlMs` 0 keeps an info notice until it is removed. */
  show(text: string, kind: NoticeKind, ttlMs = 6000): HTMLElement {
    const close = h("button", { type: "button", class: "icon", "aria-label": "Dismiss" }, "✕");
    const el = h(
      "div",
      { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
      h("span", {}, text),
      close,
    );
    close.addEventListener("click", () => el.remove());
    this.el.append(el);
    while (this.el.children.length > 4) this.el.firstElementChild?.remove();
    if (kind === "info" && ttlMs > 0) window.setTimeout(() => el.remove(), ttlMs);
    return el;
  }
}

/** A modal "are you sure?"; `onClose` runs once it is answered (to give focus back). */
export class Confirm {
  readonly dialog = h("dialog", { class: "confirm" });

  constructor(private readonly onClose: () => void) {}

  ask(title: string, body: string, action: string): Promise<boolean> {
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
        this.onClose();
      };
      cancel.addEventListener("click", () => done(false));
      ok.addEventListener("click", () => done(true));
      this.dialog.onclose = () => done(false); // Escape
      this.dialog.showModal();
      cancel.focus();
    });
  }
}

/** The message of an error, for a notice. */
export function errorText(e: unknown): string {
  return e instanceof ApiError ? e.message : e instanceof Error ? e.message : String(e);
}
