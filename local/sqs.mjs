// Starts local-aws-sqs, the SQS emulator of Spool's local stack and tests.
// Usage: node sqs.mjs --port 9324 [--host 127.0.0.1]
import { createSqsServer } from "local-aws-sqs";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const port = Number(opt("port", "9324"));
const hostname = opt("host", "127.0.0.1");

const server = await createSqsServer({ port, hostname });
console.log(`local-aws-sqs listening on http://${hostname}:${port}`);

// Exit promptly on the signals a process supervisor sends.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    server.close?.();
    process.exit(0);
  });
}
