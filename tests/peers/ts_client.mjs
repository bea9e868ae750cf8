// A real MCP client for aie's tests: the official TypeScript SDK (@modelcontextprotocol/sdk,
// installed with the conformance suite by `npm ci`), over Streamable HTTP with the legacy
// initialize handshake.
//
// Usage: node ts_client.mjs URL [--header NAME=VALUE ...]
//
// Connects, lists the tools (the SDK compiles a validator for each output schema, which is
// where Ajv warns about formats it does not know), closes the session (DELETE), and prints
// one JSON object: {"protocol_version", "tools"}. Whatever the SDK or Ajv warns goes to
// stderr, where the test reads it. Exits non-zero, with the reason on stderr, on failure.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, ...rest] = process.argv.slice(2);
const headers = {};
for (let i = 0; i < rest.length; i += 1) {
  if (rest[i] === "--header") {
    const [name, ...value] = rest[i + 1].split("=");
    headers[name] = value.join("=");
    i += 1;
  }
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers },
});
const client = new Client({ name: "aie-ts-test", version: "1.0.0" });
try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  await transport.terminateSession();
  await client.close();
  console.log(
    JSON.stringify({
      protocol_version: transport.protocolVersion ?? null,
      tools: tools.map((t) => t.name).sort(),
    }),
  );
} catch (error) {
  console.error(`ts_client: ${error?.stack ?? error}`);
  process.exit(1);
}
