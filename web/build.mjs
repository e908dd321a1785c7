// Bundles the page into dist/: index.html, app.js, app.css, favicon.svg.
// Run through ./build (which installs the packages and skips all of this when nothing
// changed); `node build.mjs --dev` keeps the output readable.
import { build } from "esbuild";
import { copyFile, mkdir, rename, rm } from "node:fs/promises";

const dev = process.argv.includes("--dev");
const out = new URL("./dist/", import.meta.url);
const tmp = new URL("./dist.tmp/", import.meta.url);

await rm(tmp, { recursive: true, force: true });
await mkdir(tmp, { recursive: true });
await build({
  entryPoints: { app: "src/main.ts" },
  outdir: tmp.pathname,
  bundle: true,
  format: "iife",
  target: ["chrome109", "firefox115", "safari16"],
  minify: !dev,
  sourcemap: dev ? "inline" : false,
  legalComments: "none",
  logLevel: "warning",
});
await copyFile(new URL("./src/index.html", import.meta.url), new URL("index.html", tmp));
await copyFile(new URL("./src/favicon.svg", import.meta.url), new URL("favicon.svg", tmp));
// Swap in whole, so a server reading dist/ from disk never sees half a build.
await rm(out, { recursive: true, force: true });
await rename(tmp, out);
