// The image picker beside "Add node": which base image the next node gets (GET /api/images).
// Shown only when the server has more than one image; each option names the image's Debian
// and Docker, so "bookworm" reads as the older engine next to the default.

import { api } from "./api";
import { h } from "./dom";
import type { Image } from "./wire";

/** One option's text, e.g. "trixie: Docker 26.1.5, Compose, buildx". */
export function imageLabel(i: Image): string {
  const tools = [i.docker ? `Docker ${i.docker}` : null, i.compose ? "Compose" : null, i.buildx ? "buildx" : null];
  const known = tools.filter((t) => t !== null);
  return known.length ? `${i.name}: ${known.join(", ")}` : i.name;
}

export class ImagePicker {
  private readonly select = h("select", { "data-test": "node-image" });
  /** The label with the select; hidden until there is a choice to make. */
  readonly el = h("label", { class: "image-pick", hidden: true }, "Image", this.select);

  /** Fills the picker from the server; on failure it stays hidden and nodes get the default. */
  async load(): Promise<void> {
    try {
      const list = await api.images();
      if (list.images.length < 2) return;
      this.select.replaceChildren(
        ...list.images.map((i) =>
          h("option", { value: i.name, selected: i.name === list.default }, imageLabel(i) + (i.name === list.default ? " (default)" : "")),
        ),
      );
      this.el.hidden = false;
    } catch {
      // The default image still works; nothing to tell the user.
    }
  }

  /** The chosen image, or undefined for the server's default. */
  value(): string | undefined {
    return this.el.hidden ? undefined : this.select.value;
  }
}
