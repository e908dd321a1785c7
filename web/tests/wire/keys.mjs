// Runs the key check of tests/wire/shapes.ts (see there): bundles it with esbuild, JSON
// included, and prints every difference between the golden examples and the page's types.
import { build } from "esbuild";

const { outputFiles } = await build({
  entryPoints: [new URL("shapes.ts", import.meta.url).pathname],
  bundle: true,
  write: false,
  format: "esm",
  platform: "node",
  logLevel: "warning",
});
const code = Buffer.from(outputFiles[0].contents).toString("base64");
const { mirrors, check } = await import(`data:text/javascript;base64,${code}`);

let failed = 0;
for (const m of mirrors) {
  const problems = check(m);
  for (const p of problems) console.error(`wire drift: ${p}`);
  failed += problems.length;
}
if (failed) {
  console.error(
    `\n${failed} difference(s) between the server's JSON (web/golden/*.json, written by its Rust ` +
      "tests) and the page's types (web/src/wire.ts, web/src/protocol.ts, with the field lists " +
      "in web/tests/wire/shapes.ts). Fix the TS side; if the server's change is unintended, fix " +
      "the Rust side and rerun its golden test with SANDPIT_UPDATE_GOLDEN=1.",
  );
  process.exit(1);
}
