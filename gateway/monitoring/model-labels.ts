// A served model id as the report and the alerts name it: the name and version the metrics label it
// with (schema/model-id.ts). An id that is no model id (the hub's "(other)" bucket) is its own name.
import { isModelId, parseModelId } from "../../schema/model-id.ts";

export function splitModelId(id: string): { model: string; version: string | null } {
  if (!isModelId(id)) return { model: id, version: null };
  const { name, version } = parseModelId(id);
  return { model: name, version };
}

/** The metrics' labels: version "" for a model served without one. */
export function modelLabels(id: string): { model: string; version: string } {
  const { model, version } = splitModelId(id);
  return { model, version: version ?? "" };
}
