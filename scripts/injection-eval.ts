// Prints the prompt-injection detector's precision and recall on the labelled corpus
// (test/fixtures/injection-corpus.ts), per split and per category, with every miss and false
// alarm: `npx tsx scripts/injection-eval.ts [--all]` (--all also lists each entry's score).
import { INJECTION_THRESHOLD } from "../gateway/security/injection-rules.ts";
import { CORPUS, type CorpusEntry } from "../test/fixtures/injection-corpus.ts";
import {
  type CorpusMetrics,
  corpusMetrics,
  type Scored,
  scoreCorpus,
} from "../test/fixtures/injection-metrics.ts";

const all = process.argv.includes("--all");
const scored = scoreCorpus(CORPUS);
const pct = (n: number) => `${(n * 100).toFixed(1)}%`;
const show = (text: string) => JSON.stringify(text.length > 110 ? `${text.slice(0, 107)}...` : text);

function line(name: string, m: CorpusMetrics): string {
  return `${name.padEnd(10)} attacks ${String(m.attacks).padStart(3)}  benign ${String(m.benign).padStart(3)}  TP ${String(m.truePositives).padStart(3)}  FP ${String(m.falsePositives).padStart(2)}  FN ${String(m.falseNegatives).padStart(2)}  precision ${pct(m.precision).padStart(6)}  recall ${pct(m.recall).padStart(6)}  F1 ${pct(m.f1).padStart(6)}`;
}

const splits: [string, (e: CorpusEntry) => boolean][] = [
  ["all", () => true],
  ["dev", (e) => e.split === "dev"],
  ["holdout", (e) => e.split === "holdout"],
];
console.log(`prompt-injection corpus: ${CORPUS.length} prompts, threshold ${INJECTION_THRESHOLD}\n`);
for (const [name, keep] of splits)
  console.log(line(name, corpusMetrics(scored.filter((s) => keep(s.entry)))));

const byCategory = new Map<string, Scored[]>();
for (const s of scored)
  byCategory.set(`${s.entry.label} ${s.entry.category}`, [
    ...(byCategory.get(`${s.entry.label} ${s.entry.category}`) ?? []),
    s,
  ]);
console.log("\nper category (flagged / total):");
for (const [category, items] of [...byCategory].sort()) {
  console.log(`  ${category.padEnd(34)} ${items.filter((s) => s.verdict.flagged).length} / ${items.length}`);
}

const describe = (s: Scored) =>
  `  [${s.entry.split}] ${s.verdict.score.toFixed(2)} ${s.verdict.findings.map((f) => `${f.rule}=${f.score}`).join(" ") || "-"}  ${show(s.entry.text)}${s.entry.note ? `\n      note: ${s.entry.note}` : ""}`;
const metrics = corpusMetrics(scored);
console.log(`\nmissed attacks (${metrics.missed.length}):`);
for (const s of metrics.missed) console.log(describe(s));
console.log(`\nfalse alarms (${metrics.falseAlarms.length}):`);
for (const s of metrics.falseAlarms) console.log(describe(s));
if (all) {
  console.log("\nevery entry:");
  for (const s of scored)
    console.log(
      `${s.entry.label === "attack" ? "A" : "B"} ${s.verdict.flagged ? "flag" : "pass"} ${describe(s)}`,
    );
}
