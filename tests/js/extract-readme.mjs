// The README's GraphQL operations, one file each, for graphql-codegen (generated/).
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const out = new URL("./generated/readme/", import.meta.url);
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
let n = 0;
for (const [, body] of readme.matchAll(/```graphql\n([\s\S]*?)```/g)) {
  // A block may hold several operations, each starting at the line's first column.
  const ops = [];
  for (const line of body.split("\n")) {
    if (/^(mutation|query|subscription|\{)/.test(line) || ops.length === 0) ops.push([]);
    ops[ops.length - 1].push(line);
  }
  for (const op of ops) {
    const text = op.join("\n").trim();
    if (!text) continue;
    n += 1;
    // Anonymous operations get a name, so that codegen makes a type for each.
    const named = text.startsWith("{")
      ? `query Readme${n} ${text}`
      : text.replace(/^(mutation|query|subscription)\s*(?=[({])/, `$1 Readme${n}`);
    writeFileSync(new URL(`op${n}.graphql`, out), named + "\n");
  }
}
if (n === 0) throw new Error("no GraphQL blocks found in README.md");
console.log(`extracted ${n} operations from README.md`);
