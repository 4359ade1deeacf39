import type { Host, Vm } from "../shared/types";
import { NO_FILTER, formatMib, groupColumns, percent, stateCounts } from "./layoutModel";

const vm = (name: string, state = "running"): Vm => ({
  name,
  state,
  vcpus: 1,
  memory_mib: 256,
  image: null,
  addresses: [],
});

const host = (name: string, group: string, vms: Vm[]): Host => ({
  name,
  group,
  rack: null,
  cpus: 16,
  memory_mib: 4096,
  mode: "on",
  status: "on",
  hypervisor: "ok",
  hypervisor_error: null,
  used_cpus: vms.length,
  used_memory_mib: vms.length * 256,
  free_cpus: 16 - vms.length,
  free_memory_mib: 4096 - vms.length * 256,
  vm_count: vms.length,
  running_vms: vms.filter((v) => v.state === "running").length,
  vms,
});

const fleet = [
  host("host-c", "rack-2", [vm("web-01"), vm("web-02", "shutoff")]),
  host("host-a", "rack-1", [vm("db-01"), vm("db-02", "paused")]),
  host("host-b", "rack-1", [vm("cache-01")]),
];

describe("groupColumns", () => {
  it("puts each group's hosts in a column, groups and hosts in name order", () => {
    const cols = groupColumns(fleet, NO_FILTER);
    expect(cols.map((c) => [c.group, c.hosts.map((h) => h.host.name)])).toEqual([
      ["rack-1", ["host-a", "host-b"]],
      ["rack-2", ["host-c"]],
    ]);
    expect(cols.map((c) => [c.vms, c.running])).toEqual([
      [3, 2],
      [2, 1],
    ]);
  });

  it("filters VMs by name and state and leaves out hosts with nothing left", () => {
    const byName = groupColumns(fleet, { ...NO_FILTER, text: "WEB" });
    expect(byName.map((c) => c.group)).toEqual(["rack-2"]);
    expect(byName[0].hosts[0].vms.map((v) => v.name)).toEqual(["web-01", "web-02"]);
    const paused = groupColumns(fleet, { ...NO_FILTER, state: "paused" });
    expect(paused.flatMap((c) => c.hosts.flatMap((h) => h.vms.map((v) => v.name)))).toEqual(["db-02"]);
  });

  it("a host whose name matches keeps all its VMs; group and host filters narrow", () => {
    const hostB = groupColumns(fleet, { ...NO_FILTER, text: "host-b" });
    expect(hostB.flatMap((c) => c.hosts.map((h) => [h.host.name, h.vms.length]))).toEqual([["host-b", 1]]);
    expect(groupColumns(fleet, { ...NO_FILTER, group: "rack-2" }).map((c) => c.group)).toEqual(["rack-2"]);
    const one = groupColumns(fleet, { ...NO_FILTER, host: "host-a", state: "running" });
    expect(one.flatMap((c) => c.hosts.flatMap((h) => h.vms.map((v) => v.name)))).toEqual(["db-01"]);
  });

  it("keeps a host without VMs when no VM filter is set", () => {
    const empty = [host("host-z", "rack-9", [])];
    expect(groupColumns(empty, NO_FILTER)[0].hosts).toHaveLength(1);
    expect(groupColumns(empty, { ...NO_FILTER, state: "running" })).toEqual([]);
  });
});

describe("helpers", () => {
  it("counts states, bounds percentages and prints memory", () => {
    expect(stateCounts(fleet)).toEqual({ running: 3, shutoff: 1, paused: 1 });
    expect(percent(4, 16)).toBe(25);
    expect(percent(20, 16)).toBe(100);
    expect(percent(null, 16)).toBe(0);
    expect(formatMib(512)).toBe("512 MiB");
    expect(formatMib(3072)).toBe("3 GiB");
    expect(formatMib(1536)).toBe("1.5 GiB");
  });
});
