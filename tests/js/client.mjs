// Apollo Client 4 and graphql-ws against a running okr serve (OKR_URL, OKR_TOKEN):
// subscribe to progress, read the dashboard, check in on its first key result, and
// wait for the subscription to deliver that check-in. Prints one JSON line; exit 1 on
// anything unexpected or after 30 s.
import { readFileSync } from "node:fs";

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { parse } from "graphql";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const url = process.env.OKR_URL ?? "http://127.0.0.1:8000";
const token = process.env.OKR_TOKEN;
if (!token) throw new Error("OKR_TOKEN is required");

const document = parse(readFileSync(new URL("./operations.graphql", import.meta.url), "utf8"));
const operation = (name) => ({
  kind: "Document",
  definitions: document.definitions.filter((d) => d.name?.value === name),
});

let connected;
const ready = new Promise((resolve) => (connected = resolve));
const ws = createClient({
  url: url.replace(/^http/, "ws") + "/graphql",
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  on: { connected: () => connected() },
});
const http = new HttpLink({ uri: `${url}/graphql`, headers: { Authorization: `Bearer ${token}` } });
const link = ApolloLink.split(
  ({ query }) => {
    const def = getMainDefinition(query);
    return def.kind === "OperationDefinition" && def.operation === "subscription";
  },
  new GraphQLWsLink(ws),
  http,
);
const client = new ApolloClient({
  link,
  cache: new InMemoryCache(),
  defaultOptions: { query: { fetchPolicy: "no-cache" }, mutate: { fetchPolicy: "no-cache" } },
});

const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 30_000);

const value = Number(process.env.OKR_CHECK_IN_VALUE ?? "3.84");
const delivered = new Promise((resolve, reject) => {
  client.subscribe({ query: operation("Progress") }).subscribe({
    next: (result) => {
      if (result.error) reject(result.error);
      else if (result.data?.progressChanged?.checkIn?.value === value) resolve(result.data);
    },
    error: reject,
  });
});
await ready;
await new Promise((resolve) => setTimeout(resolve, 300)); // the subscribe message is sent

const dashboard = await client.query({ query: operation("Dashboard") });
const root = dashboard.data.objectives.edges[0].node;
const keyResultId = root.keyResults[0].id;
const checkedIn = await client.mutate({
  mutation: operation("CheckIn"),
  variables: { keyResultId, value },
});
if (checkedIn.data.checkIn.userErrors.length) {
  throw new Error(JSON.stringify(checkedIn.data.checkIn.userErrors));
}
const event = await delivered;
clearTimeout(timer);
console.log(
  JSON.stringify({
    roots: dashboard.data.objectives.edges.length,
    rootTitle: root.title,
    keyResultId,
    checkIn: checkedIn.data.checkIn.checkIn,
    event: event.progressChanged,
  }),
);
await ws.dispose();
client.stop();
process.exit(0);
