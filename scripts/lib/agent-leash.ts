// Preloaded into the agent that `npm start` supervises (`node --import`): the agent drains and
// exits once npm start is gone, even when npm start was killed with SIGKILL and never got to stop
// it. npm start holds the other end of the agent's stdin; the kernel closes it when npm start
// exits, on Linux and macOS alike, so end of file here means nobody supervises this agent now.
// Done from the outside so that node-agent/main.ts stays a plain daemon (launchd restarts it
// the same way without this).
const graceMs = Number(process.env.ORCHARD_LEASH_GRACE_MS) || 35_000;
// Only the agent npm start spawned is on the leash. node-llama-cpp forks helper processes with
// the agent's flags (process.execArgv, so this module too) and stdin /dev/null: they must not
// take their end of file for npm start's exit and SIGTERM themselves.
const onLeash = process.ppid === Number(process.env.ORCHARD_LEASH_PARENT_PID);

let released = false;
function supervisorGone(): void {
  if (released) return;
  released = true;
  // main.ts drains on the first SIGTERM and exits at once on the second.
  process.kill(process.pid, "SIGTERM");
  setTimeout(() => process.kill(process.pid, "SIGTERM"), graceMs).unref();
}

if (onLeash) {
  process.stdin.on("end", supervisorGone);
  process.stdin.on("error", supervisorGone);
  process.stdin.resume();
  // Watching stdin must not keep an agent alive that has nothing else to do.
  process.stdin.unref();
}
