// The dashboard's files as the Worker serves them: each asset's URL carries a hash of its content,
// so the shell (revalidated on every load) always names the current script and style, and those
// may be cached for good. Computed once per isolate from constants: derived, not state.
import { fnv1a32 } from "../../schema/rollouts.ts";
import { DASHBOARD_ICON, dashboardShell } from "./page.ts";
import { DASHBOARD_SCRIPT } from "./script.ts";
import { DASHBOARD_STYLE } from "./style.ts";

export interface DashboardAsset {
  path: string;
  /** The content hash the URL carries as ?v=. */
  version: string;
  contentType: string;
  body: string;
}

const asset = (path: string, contentType: string, body: string): DashboardAsset => ({
  path,
  version: fnv1a32(body).toString(36),
  contentType,
  body,
});

const urlOf = (a: DashboardAsset) => `${a.path}?v=${a.version}`;

export const DASHBOARD_PATH = "/dashboard";

/** Script, style and icon, by path. */
export const DASHBOARD_ASSETS: ReadonlyMap<string, DashboardAsset> = new Map(
  [
    asset("/dashboard/app.js", "text/javascript; charset=utf-8", DASHBOARD_SCRIPT),
    asset("/dashboard/app.css", "text/css; charset=utf-8", DASHBOARD_STYLE),
    asset("/dashboard/icon.svg", "image/svg+xml", DASHBOARD_ICON),
  ].map((a) => [a.path, a]),
);

function assetUrl(path: string): string {
  const found = DASHBOARD_ASSETS.get(path);
  if (found === undefined) throw new Error(`no dashboard asset ${path}`);
  return urlOf(found);
}

export const DASHBOARD_HTML = dashboardShell({
  script: assetUrl("/dashboard/app.js"),
  style: assetUrl("/dashboard/app.css"),
  icon: assetUrl("/dashboard/icon.svg"),
});
