// The server layout as drawn: hosts in columns by network group, filtered by name, state, group and
// host. Pure functions over the `rackflow/api/hosts` answer, tested in layoutModel.test.ts.
import type { Host, Vm } from "../shared/types";

export interface LayoutFilter {
  /** Part of a host's or VM's name (case-insensitive); a host matching shows all its VMs. */
  text: string;
  /** VM state ("" for any). */
  state: string;
  group: string;
  host: string;
}

export const NO_FILTER: LayoutFilter = { text: "", state: "", group: "", host: "" };

export interface ShownHost {
  host: Host;
  /** The host's VMs that pass the filter. */
  vms: Vm[];
}

export interface GroupColumn {
  group: string;
  hosts: ShownHost[];
  vms: number;
  running: number;
}

/** Whether any filter is set. */
export const filtering = (f: LayoutFilter): boolean => Boolean(f.text || f.state || f.group || f.host);

/** Hosts by group (groups and hosts in name order) with the VMs that pass `f`; a host is left out when
 * a filter is set and neither it nor any of its VMs matches. */
export function groupColumns(hosts: Host[], f: LayoutFilter): GroupColumn[] {
  const text = f.text.trim().toLowerCase();
  const columns = new Map<string, GroupColumn>();
  for (const host of hosts) {
    if (f.group && host.group !== f.group) continue;
    if (f.host && host.name !== f.host) continue;
    const hostMatches = !text || host.name.toLowerCase().includes(text);
    const vms = host.vms.filter(
      (vm) => (!f.state || vm.state === f.state) && (hostMatches || vm.name.toLowerCase().includes(text)),
    );
    if ((text || f.state) && vms.length === 0 && !(hostMatches && !f.state)) continue;
    let column = columns.get(host.group);
    if (!column) {
      column = { group: host.group, hosts: [], vms: 0, running: 0 };
      columns.set(host.group, column);
    }
    column.hosts.push({ host, vms });
    column.vms += host.vms.length;
    column.running += host.vms.filter((vm) => vm.state === "running").length;
  }
  const out = [...columns.values()].sort((a, b) => a.group.localeCompare(b.group));
  for (const c of out) c.hosts.sort((a, b) => a.host.name.localeCompare(b.host.name));
  return out;
}

/** VM counts by state over the hosts (for the state filter and the legend). */
export function stateCounts(hosts: Host[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const h of hosts) for (const vm of h.vms) counts[vm.state] = (counts[vm.state] ?? 0) + 1;
  return counts;
}

/** Share of `used` in `total` as a percentage in 0..100 (0 when unknown); over-commit shows full. */
export function percent(used: number | null | undefined, total: number | null | undefined): number {
  if (!used || !total || total <= 0) return 0;
  return Math.min(100, Math.max(0, (used / total) * 100));
}

/** `1.5 GiB`, `512 MiB`. */
export function formatMib(mib: number | null | undefined): string {
  if (mib === null || mib === undefined) return "?";
  return mib >= 1024 ? `${(mib / 1024).toFixed(mib % 1024 === 0 ? 0 : 1)} GiB` : `${mib} MiB`;
}
