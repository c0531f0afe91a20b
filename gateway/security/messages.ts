// The fixed messages callers get from the security layer: they name a rule or a filter by its
// configured name, never the text that matched.

export function outputBlockedMessage(filter: string): string {
  return `the generated text matches the content filter ${filter}; the answer was stopped`;
}
