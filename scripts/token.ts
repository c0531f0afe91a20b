// `npm run token -- --role user|admin|agent --sub NAME [--ttl 1h] [--kid K]`: prints a token
// signed with the local secret (.dev.vars, or JWT_SECRET in the environment). The token is the
// last line of stdout.
import { parseArgs } from "node:util";
import { ensureDevSecret } from "./lib/dev-vars.ts";
import { mintToken, parseTtl, ROLES, type Role } from "./lib/token.ts";

function fail(message: string): never {
  process.stderr.write(`token: ${message}\n`);
  process.exit(2);
}

let values: Record<string, string | boolean | undefined>;
try {
  ({ values } = parseArgs({
    options: {
      role: { type: "string" },
      sub: { type: "string" },
      ttl: { type: "string", default: "1h" },
      kid: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  }));
} catch (err) {
  fail((err as Error).message);
}
if (values.help) {
  process.stdout.write("usage: npm run token -- --role user|admin|agent --sub NAME [--ttl 1h] [--kid KID]\n");
  process.exit(0);
}
const role = values.role as string | undefined;
if (!role || !ROLES.includes(role as Role)) fail(`--role must be one of ${ROLES.join(", ")}`);
const sub = values.sub as string | undefined;
if (!sub || !/^[A-Za-z0-9._@:-]{1,128}$/.test(sub))
  fail("--sub is required: 1-128 letters, digits or . _ @ : -");
const ttlSeconds = parseTtl(values.ttl as string);
if (ttlSeconds === undefined) fail(`--ttl "${values.ttl}" is not a duration like 90s, 30m, 1h or 7d`);

const secret = process.env.JWT_SECRET || ensureDevSecret().secret;
const token = await mintToken({
  secret,
  role: role as Role,
  sub,
  ttlSeconds,
  kid: values.kid as string | undefined,
  issuer: process.env.JWT_ISSUER || undefined,
  audience: process.env.JWT_AUDIENCE || undefined,
});
process.stdout.write(`${token}\n`);
