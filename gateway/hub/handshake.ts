// The hub's answer to an agent's `hello`: the protocol version both speak (this hub speaks
// MIN_PROTOCOL_VERSION..PROTOCOL_VERSION, so agents one version behind keep serving during a rolling
// upgrade) and the optional features it will use. Pure: the AgentHub sends what this decides.
import {
  type Capability,
  CloseCode,
  type HelloFrame,
  knownCapabilities,
  MIN_PROTOCOL_VERSION,
  negotiateProtocol,
  PROTOCOL_VERSION,
} from "../../schema/protocol.ts";

/** Capabilities this hub knows how to use. */
const HUB_CAPABILITIES: ReadonlySet<Capability> = new Set([
  "load",
  "structured_output",
  "duplicate_answer",
  "artifacts",
]);

export type HelloDecision =
  | { accept: true; protocol: number; capabilities: Capability[] }
  | { accept: false; code: CloseCode; reason: string };

export function answerHello(hello: HelloFrame, agentId: string): HelloDecision {
  if (hello.agentId !== agentId) {
    return {
      accept: false,
      code: CloseCode.PROTOCOL_ERROR,
      reason: "hello.agentId does not match the token subject",
    };
  }
  const protocol = negotiateProtocol(hello);
  if (protocol === null) {
    const theirs =
      hello.minProtocol === undefined || hello.minProtocol === hello.protocol
        ? `${hello.protocol}`
        : `${hello.minProtocol}..${hello.protocol}`;
    return {
      accept: false,
      code: CloseCode.INCOMPATIBLE_VERSION,
      reason: `protocol ${theirs} unsupported; hub speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`,
    };
  }
  const capabilities = knownCapabilities(hello.capabilities).filter((c) => HUB_CAPABILITIES.has(c));
  // From v2 on, answering duplicates is part of the protocol whether or not the agent lists it.
  if (protocol >= 2 && !capabilities.includes("duplicate_answer")) {
    capabilities.push("duplicate_answer");
    capabilities.sort();
  }
  return { accept: true, protocol, capabilities };
}
