import { bandTitle, packRows, reservationsFor, type Reservation, type TimelineNode } from "./timeline";

const res = (name: string, start: string, end: string, group: string | null = null): Reservation => ({
  id: 1,
  key: `res-${name}`,
  name,
  start: `2026-12-01T${start}:00Z`,
  end: `2026-12-01T${end}:00Z`,
  vm_count: 1,
  vcpus_per_vm: 1,
  memory_mib_per_vm: 128,
  group,
  state: "active",
  created_by: "operator",
});

describe("packRows", () => {
  it("puts overlapping reservations on separate rows and reuses a row once free", () => {
    const packed = packRows([res("b", "11:00", "13:00"), res("a", "10:00", "12:00"), res("c", "12:00", "14:00")]);
    expect(packed.map((p) => [p.item.name, p.row])).toEqual([
      ["a", 0],
      ["b", 1],
      ["c", 0],
    ]);
  });
});

describe("reservationsFor", () => {
  it("gives a node its group's reservations and those for any group", () => {
    const node: TimelineNode = { name: "n", group: "g1", mode: "on", status: "on", last_error: null, bands: [] };
    const all = [res("mine", "10:00", "11:00", "g1"), res("any", "10:00", "11:00"), res("other", "10:00", "11:00", "g2")];
    expect(reservationsFor(node, all).map((r) => r.name)).toEqual(["mine", "any"]);
  });
});

describe("bandTitle", () => {
  it("says value, span, actor and reason", () => {
    const title = bandTitle(
      { field: "mode", value: "off", start: "a", end: "b", actor: "operator", reason: "maintenance" },
      (v) => v.toUpperCase(),
    );
    expect(title).toBe("mode off A → B by operator — maintenance");
    expect(bandTitle({ field: "status", value: null, start: "a", end: "b", actor: null, reason: null }, (v) => v)).toBe(
      "status unknown a → b",
    );
  });
});
