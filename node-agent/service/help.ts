// The help text of the service commands and of start's service flags, for main.ts's usage text
// (kept apart so `help` loads neither the service commands nor the log and state files).

export const SERVICE_HELP = `  install [--dry-run] [--node PATH] [agent flags]
           run the agent as a service of this user with these flags (launchd on macOS, systemd
           --user on Linux): validates them like start, writes the token to a file only this user
           can read, (re)starts the service; --dry-run prints the file instead;
           --node picks the node the service runs (default: this one)
  uninstall
           stop the service (it drains) and remove its file and token file (logs stay)
  status   whether the service runs, and what the agent last reported (exit 0 only when running)`;

export const SERVICE_RUN_HELP = `  --log-file FILE                 start: JSON log lines to FILE, rotated at 10 MiB, 4 old files kept (default: stderr)
  --state-file FILE               start: keep FILE up to date with the agent's connection and work, for \`status\``;
