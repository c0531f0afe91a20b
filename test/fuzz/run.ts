// `npm run fuzz`: the long fuzz run (docs/fuzzing.md). Runs the gateway project's fuzz files with
// many more runs per property than CI (FUZZ_RUNS, default 1000) under one seed (FUZZ_SEED, random
// unless given), prints the seed first and again on failure; each failing property prints its
// counterexample and the command that replays it. Extra arguments go to vitest
// (`npm run fuzz -- -t "POST /generate"`, `npm run fuzz -- --silent=false` for the tallies).
import { spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";

const FILES = ["test/gateway/fuzz-http.test.ts", "test/gateway/fuzz-agent-frames.test.ts"];

const runs = process.env.FUZZ_RUNS ?? "1000";
const seed = process.env.FUZZ_SEED ?? String(randomInt(-(2 ** 31), 2 ** 31));
const extra = process.argv.slice(2);

console.log(`fuzz: FUZZ_RUNS=${runs} FUZZ_SEED=${seed} (replay this run with the same two variables)`);
const started = Date.now();
const result = spawnSync("node_modules/.bin/vitest", ["run", "--project", "gateway", ...FILES, ...extra], {
  stdio: "inherit",
  env: { ...process.env, FUZZ_RUNS: runs, FUZZ_SEED: seed },
});
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
if (result.status === 0) {
  console.log(`fuzz: passed in ${minutes} min (FUZZ_RUNS=${runs} FUZZ_SEED=${seed})`);
} else {
  console.log(
    `fuzz: FAILED after ${minutes} min; seed FUZZ_SEED=${seed}, FUZZ_RUNS=${runs}. Each failure above names ` +
      "its counterexample and the command that replays it; a fixed one becomes a regression test (docs/fuzzing.md).",
  );
}
process.exit(result.status ?? 1);
