// /proc helpers (Linux): a process's children, resident memory, CPU time and listening ports, so
// the bench can find the workerd processes wrangler starts and read their memory from outside.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/** Fields of /proc/<pid>/stat after the command name (which may contain spaces). */
function statFields(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    return text.slice(text.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

export function commandName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** Direct children of `pid`. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    if (fields && Number(fields[1]) === pid) out.push(Number(entry));
  }
  return out;
}

/** Every descendant of `pid` (one pass over /proc). */
export function descendantsOf(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = Number(statFields(Number(entry))?.[1]);
    if (!Number.isFinite(ppid)) continue;
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/** Resident set size in bytes (VmRSS), or undefined when the process is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * CPU time consumed so far by all of a process's threads, in milliseconds: nanosecond-precise from
 * each thread's schedstat, else utime + stime from stat (10 ms clock ticks).
 */
export function cpuTimeMs(pid: number): number | undefined {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        // thread exited meanwhile
      }
    }
    if (ns > 0) return ns / 1e6;
  } catch {
    // no schedstat: fall back to clock ticks
  }
  const fields = statFields(pid);
  if (!fields) return undefined;
  // After "comm": state(0) ppid(1) ... utime is field 14 overall -> index 11 here, stime index 12.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** TCP ports `pid` listens on (IPv4 and IPv6). */
export function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m?.[1]) inodes.add(m[1]);
      } catch {
        // fd closed meanwhile
      }
    }
  } catch {
    return [];
  }
  const ports: number[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      // local_address is "HEXIP:HEXPORT"; state 0A is LISTEN; inode is column 9.
      if (cols.length < 10 || cols[3] !== "0A" || !inodes.has(cols[9] as string)) continue;
      ports.push(Number.parseInt((cols[1] as string).split(":")[1] as string, 16));
    }
  }
  return ports;
}
