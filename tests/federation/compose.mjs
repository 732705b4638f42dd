// Composes subgraphs with @apollo/composition and prints the outcome as JSON:
//   node compose.mjs name=path.graphql[@url] ...
// {"errors": [...], "hints": [...], "supergraphSdl": "..."} (exit 0 either way; the test reads it).
import { readFileSync } from "node:fs";
import { composeServices } from "@apollo/composition";
import { parse } from "graphql";

const services = process.argv.slice(2).map((arg) => {
  const [name, path] = arg.split("=");
  return { name, url: `http://${name}.example/graphql`, typeDefs: parse(readFileSync(path, "utf8")) };
});
const result = composeServices(services);
process.stdout.write(
  JSON.stringify({
    errors: (result.errors ?? []).map((e) => e.message),
    hints: (result.hints ?? []).map((h) => h.toString()),
    supergraphSdl: result.supergraphSdl ?? null,
  }),
);
