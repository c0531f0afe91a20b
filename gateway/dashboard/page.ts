// The dashboard's HTML shell: landmarks and empty sections that /dashboard/app.js fills from the
// JSON API. It holds no data and needs no token, so it can be served to anyone; the sign-in field
// has no name, so even a form submitted without the script would carry no token.
export interface ShellAssets {
  script: string;
  style: string;
  icon: string;
}

export function dashboardShell({ script, style, icon }: ShellAssets): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>Orchard dashboard</title>
<link rel="icon" type="image/svg+xml" href="${icon}">
<link rel="stylesheet" href="${style}">
<script type="module" src="${script}"></script>
</head>
<body>
<header>
<h1>Orchard</h1>
<p id="fleet" role="status" aria-live="polite">Loading…</p>
<p id="updated" class="muted"></p>
<p id="who" class="muted" hidden></p>
<button id="sign-out" type="button" hidden>Sign out</button>
</header>
<main>
<noscript><p>This dashboard needs JavaScript; the JSON API works without it.</p></noscript>
<section id="sign-in" aria-labelledby="sign-in-title" hidden>
<h2 id="sign-in-title">Sign in</h2>
<p>Paste an admin token (<code>npm run token -- --role admin --sub you</code>). It stays in this
tab's session storage and is sent only as a bearer header; a link to
<code>/dashboard#token=…</code> signs in too.</p>
<form id="sign-in-form" autocomplete="off">
<label for="token">Admin token</label>
<input id="token" type="password" required spellcheck="false" autocomplete="off" autocapitalize="off">
<button type="submit">Sign in</button>
</form>
<p id="sign-in-message" role="alert"></p>
</section>
<div id="board" hidden>
<section id="alerts" aria-labelledby="alerts-title"><h2 id="alerts-title">Alerts</h2><div id="alerts-body"></div></section>
<section id="charts" aria-labelledby="charts-title"><h2 id="charts-title">Last hour</h2><div id="charts-body" class="charts"></div><p id="charts-note" class="note"></p></section>
<section id="agents" aria-labelledby="agents-title"><h2 id="agents-title">Agents</h2><div id="agents-body"></div></section>
<section id="models" aria-labelledby="models-title"><h2 id="models-title">Models</h2><div id="models-body"></div></section>
<section id="deployments" aria-labelledby="deployments-title" hidden><h2 id="deployments-title">Deployments</h2><div id="deployments-body"></div></section>
<section id="ab-tests" aria-labelledby="ab-tests-title" hidden><h2 id="ab-tests-title">A/B tests</h2><div id="ab-tests-body"></div></section>
</div>
</main>
</body>
</html>
`;
}

/** The tab's icon, one tree: linked from the shell so the browser never asks for /favicon.ico (a 404). */
export const DASHBOARD_ICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="6" r="5" fill="#2f8f46"/><rect x="7" y="10" width="2" height="6" fill="#7a4a21"/></svg>`;
