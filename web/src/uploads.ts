// Uploading files into a node: by the toolbar's button or by dropping files onto the terminal
// pane. Each file goes to the node's /root under its own name (`PUT .../files`), one after
// another, with a notice while it goes and one when it is there (or why not).

import { api } from "./api";
import { formatBytes } from "./dom";
import { errorText, type NoticeKind } from "./notices";
import type { Node as SandpitNode } from "./wire";

type Notify = (text: string, kind: NoticeKind, ttlMs?: number) => HTMLElement;

/** Uploads `files` into `node` of session `sid`, one at a time. */
export async function uploadFiles(sid: string, node: SandpitNode, files: File[], notify: Notify): Promise<void> {
  for (const f of files) {
    const note = notify(`Uploading ${f.name} to ${node.hostname}… (${formatBytes(f.size)})`, "info", 0);
    try {
      const res = await api.upload(sid, node.name, f.name, f);
      note.remove();
      notify(`Uploaded ${f.name} to ${node.hostname}:${res.path} (${formatBytes(res.size)}).`, "info");
    } catch (e) {
      note.remove();
      notify(`Could not upload ${f.name}: ${errorText(e)}`, "error");
    }
  }
}

/**
 * Takes files dropped onto `pane`: while they are dragged over it, `overlay` says where they
 * will go (`target()`: the selected node); dropped, they go to `onFiles`.
 */
export function acceptDrops(
  pane: HTMLElement,
  overlay: HTMLElement,
  target: () => SandpitNode | undefined,
  onFiles: (files: File[]) => void,
): void {
  // dragenter/dragleave fire for every child crossed: count them.
  let depth = 0;
  const hasFiles = (ev: DragEvent) => Array.from(ev.dataTransfer?.types ?? []).includes("Files");
  pane.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth++;
    const n = target();
    overlay.textContent = n ? `Drop to upload into ${n.hostname}:/root` : "Add a node first to upload files";
    overlay.hidden = false;
  });
  pane.addEventListener("dragover", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    if (ev.dataTransfer) ev.dataTransfer.dropEffect = "copy";
  });
  pane.addEventListener("dragleave", (ev) => {
    if (!hasFiles(ev)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  pane.addEventListener("drop", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth = 0;
    overlay.hidden = true;
    onFiles(Array.from(ev.dataTransfer?.files ?? []));
  });
}
