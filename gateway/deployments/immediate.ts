// Immediate: the candidate loads on the agents (share 0, so no user is sent to it yet), then the
// registry switches to it and the deployment ends.
import { notAllowed, type StrategyMachine } from "./strategy.ts";
import { awaitCandidate, resolveReplicas } from "./turn.ts";

export const immediate: StrategyMachine<"immediate"> = {
  needsBaseline: false,

  advance(turn, seen) {
    if (turn.state.status !== "preparing") return;
    const replicas = resolveReplicas(turn, seen, turn.spec.options.replicas);
    if (!awaitCandidate(turn, seen, replicas, turn.spec.options.timeoutMs)) return;
    turn.effect({ kind: "activate_candidate", replicas });
    turn.event("candidate_activated", { replicas, elapsedMs: turn.now - turn.state.startedAt });
    turn.finish("succeeded", "the candidate is active");
  },

  command(turn, command) {
    if (command !== "abort")
      return notAllowed(`an immediate deployment cannot ${command}: it only loads and switches`);
    turn.event("aborted", { status: turn.state.status });
    turn.finish("aborted", "aborted before the switch: the baseline still serves");
    return null;
  },

  route(spec, state) {
    return state.status === "preparing"
      ? { share: 0, phase: 0, placementReplicas: state.replicas ?? spec.options.replicas ?? 1 }
      : null;
  },
};
