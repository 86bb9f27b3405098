// Starts dynalite, the DynamoDB emulator of Spool's local stack and tests.
// Usage: node dynamodb.mjs --port 8000 [--host 127.0.0.1]
//
// dynalite's CLI rethrows a request's 'error' event, so a client killed in
// the middle of a request (a SIGKILLed dispatcher, which the chaos tests do
// every two seconds) takes the whole emulator down with ECONNRESET. AWS
// shrugs such a client off; this starter does the same and keeps serving.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const dynalite = require("dynalite");

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const port = Number(opt("port", "8000"));
const host = opt("host", "127.0.0.1");

process.on("uncaughtException", (err) => {
  if (err && (err.code === "ECONNRESET" || err.message === "aborted")) {
    console.error(`dynalite: a client went away mid-request (${err.code || err.message}); still serving`);
    return;
  }
  console.error(err);
  process.exit(1);
});

// In memory (no path): tables vanish with the process, which is what tests
// and the demo want.
const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
server.listen(port, host, (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`dynalite listening on http://${host}:${port}`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
