// Where the repository is, for scripts that must not load wrangler just to learn it (npm start's
// supervisor: importing wrangler installs SIGINT/SIGTERM handlers that call process.exit()).
import { resolve } from "node:path";

export const REPO_ROOT = resolve(import.meta.dirname, "../..");
