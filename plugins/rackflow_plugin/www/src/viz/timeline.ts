// The power timeline's shapes: the `rackflow/api/power/timeline` answer, and reservations packed into
// as few rows as do not overlap. Pure; tested in timeline.test.ts.
import { parseUtc } from "../shared/dates";

export interface Band {
  field: "status" | "mode";
  value: string | null;
  start: string;
  end: string;
  actor: string | null;
  reason: string | null;
}

export interface TimelineNode {
  name: string;
  group: string;
  mode: string;
  status: string | null;
  last_error: string | null;
  bands: Band[];
}

export interface Reservation {
  id: number;
  key: string;
  name: string;
  start: string;
  end: string;
  vm_count: number;
  vcpus_per_vm: number;
  memory_mib_per_vm: number;
  group: string | null;
  state: string;
  created_by: string;
}

export interface Timeline {
  now: string;
  since: string;
  until: string;
  on_threshold_s: number;
  off_threshold_s: number;
  on_window_end: string;
  off_window_end: string;
  can_act: boolean;
  nodes: TimelineNode[];
  reservations: Reservation[];
}

const t = (v: string): number => parseUtc(v)?.getTime() ?? Number.NaN;

/** Row index per reservation so that bars in one row never overlap (earliest start first). */
export function packRows<T extends { start: string; end: string }>(items: T[]): { item: T; row: number }[] {
  const sorted = [...items].sort((a, b) => t(a.start) - t(b.start) || t(a.end) - t(b.end));
  const rowEnds: number[] = [];
  return sorted.map((item) => {
    let row = rowEnds.findIndex((end) => end <= t(item.start));
    if (row === -1) {
      row = rowEnds.length;
      rowEnds.push(0);
    }
    rowEnds[row] = t(item.end);
    return { item, row };
  });
}

/** The reservations a node's group may serve: those of its group, and those for any group. */
export function reservationsFor(node: TimelineNode, reservations: Reservation[]): Reservation[] {
  return reservations.filter((r) => r.group === null || r.group === node.group);
}

/** A band's hover text: `on since 10:02 UTC by rackflow_power_monitor — reason`. */
export function bandTitle(band: Band, format: (v: string) => string): string {
  const who = band.actor ? ` by ${band.actor}` : "";
  const why = band.reason ? ` — ${band.reason}` : "";
  return `${band.field} ${band.value ?? "unknown"} ${format(band.start)} → ${format(band.end)}${who}${why}`;
}

/** Window presets of the page: label and hours back. */
export const WINDOWS: { label: string; hours: number }[] = [
  { label: "6 hours", hours: 6 },
  { label: "24 hours", hours: 24 },
  { label: "3 days", hours: 72 },
  { label: "7 days", hours: 168 },
];
