// The dashboard's stylesheet, served as /dashboard/app.css (the CSP allows style-src 'self' only,
// so no inline styles): system fonts, light and dark from prefers-color-scheme, a visible focus
// ring, and a layout that fits a 1280×800 laptop screen without scrolling sideways.
export const DASHBOARD_STYLE = `:root {
  color-scheme: light dark;
  --bg: #f6f7f9;
  --panel: #ffffff;
  --text: #1b1f24;
  --muted: #57606a;
  --line: #d0d7de;
  --accent: #0b5cad;
  --mark: #2f6fb5;
  --ok: #116329;
  --ok-bg: #dafbe1;
  --warn: #7d4e00;
  --warn-bg: #fff1c2;
  --bad: #a40e26;
  --bad-bg: #ffe1e4;
  --focus: #bf4a00;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1216;
    --panel: #171b21;
    --text: #e6edf3;
    --muted: #9aa5b1;
    --line: #30363d;
    --accent: #6cb6ff;
    --mark: #6cb6ff;
    --ok: #7ee2a8;
    --ok-bg: #12331f;
    --warn: #f2cc60;
    --warn-bg: #3a2e0b;
    --bad: #ff9492;
    --bad-bg: #42181b;
    --focus: #ffa657;
  }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
html { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
body { margin: 0; background: var(--bg); color: var(--text); }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
header {
  display: flex; flex-wrap: wrap; align-items: center; gap: 0.4rem 1.2rem;
  padding: 0.6rem 1.2rem; background: var(--panel); border-bottom: 1px solid var(--line);
}
h1 { font-size: 1.2rem; margin: 0; }
h2 { font-size: 1rem; margin: 0 0 0.5rem; }
header p { margin: 0; }
#fleet { font-weight: 600; }
#fleet[data-status="ok"]::before { content: "● "; color: var(--ok); }
#fleet[data-status="degraded"]::before { content: "● "; color: var(--warn); }
.muted, .note, caption, .axis-labels { color: var(--muted); }
#sign-out { margin-left: auto; }
main { max-width: 1400px; margin: 0 auto; padding: 0.8rem 1.2rem 2rem; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 0.7rem 0.9rem; margin-bottom: 0.8rem; }
#sign-in { max-width: 36rem; margin: 3rem auto; }
form { display: flex; flex-wrap: wrap; gap: 0.5rem; align-items: center; }
label { font-weight: 600; width: 100%; }
input { flex: 1; min-width: 16rem; font: inherit; padding: 0.4rem 0.5rem; border: 1px solid var(--line); border-radius: 4px; background: var(--bg); color: var(--text); }
button { font: inherit; padding: 0.35rem 0.9rem; border: 1px solid var(--accent); border-radius: 4px; background: var(--accent); color: var(--panel); cursor: pointer; }
#sign-out { background: transparent; color: var(--accent); }
#sign-in-message:not(:empty) { color: var(--bad); font-weight: 600; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(14rem, 1fr)); gap: 0.8rem; }
.figure { margin: 0; }
figcaption { display: flex; justify-content: space-between; gap: 0.5rem; }
.chart { display: block; width: 100%; height: auto; margin-top: 0.2rem; }
.chart .axis { stroke: var(--line); }
.chart .grid { stroke: var(--line); stroke-dasharray: 3 3; }
.chart .mark { fill: var(--mark); stroke: none; }
.chart.line .mark { fill: none; stroke: var(--mark); stroke-width: 1.8; }
.chart .dot { fill: var(--mark); }
.axis-labels { display: flex; justify-content: space-between; margin: 0; font-size: 0.8rem; }
.note { margin: 0.3rem 0; }
.note.warn { color: var(--warn); }
.ok-text { color: var(--ok); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-size: 0.85rem; padding-bottom: 0.3rem; }
th, td { text-align: left; padding: 0.3rem 0.6rem 0.3rem 0; border-bottom: 1px solid var(--line); vertical-align: top; }
thead th { font-size: 0.8rem; color: var(--muted); font-weight: 600; white-space: nowrap; }
tbody th { font-weight: 600; }
td { font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0 0.45rem; border-radius: 999px; font-size: 0.82rem; border: 1px solid var(--line); white-space: nowrap; }
.badge.ok { color: var(--ok); background: var(--ok-bg); border-color: transparent; }
.badge.warn { color: var(--warn); background: var(--warn-bg); border-color: transparent; }
.badge.bad { color: var(--bad); background: var(--bad-bg); border-color: transparent; }
`;
