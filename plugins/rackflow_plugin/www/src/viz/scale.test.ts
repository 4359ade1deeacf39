import { tickLabel, timeScale, timeTicks } from "./scale";

describe("timeScale", () => {
  const s = timeScale("2026-12-01T10:00:00Z", "2026-12-01T12:00:00Z", 100, 300);

  it("maps UTC instants linearly onto pixels", () => {
    expect(s.x("2026-12-01T10:00:00Z")).toBe(100);
    expect(s.x("2026-12-01T11:00:00+00:00")).toBe(200);
    expect(s.x("2026-12-01T13:00:00+01:00")).toBe(300); // an offset is the same instant
    expect(s.x("2026-12-01 11:00:00")).toBe(200); // a naive value is UTC, not the browser's zone
  });

  it("clamps outside the axis unless asked not to", () => {
    expect(s.x("2026-12-01T09:00:00Z")).toBe(100);
    expect(s.x("2026-12-01T09:00:00Z", false)).toBe(0);
  });

  it("widens an empty span instead of dividing by zero", () => {
    const empty = timeScale("2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z", 0, 10);
    expect(empty.x("2026-12-01T10:00:00Z")).toBe(0);
    expect(Number.isFinite(empty.x("2026-12-01T10:00:00.5Z"))).toBe(true);
  });
});

describe("timeTicks", () => {
  it("puts round UTC marks over the span", () => {
    const s = timeScale("2026-12-01T10:07:00Z", "2026-12-01T12:00:00Z", 0, 1000);
    const ticks = timeTicks(s, 8);
    expect(ticks.map((t) => t.label)).toEqual(["10:15", "10:30", "10:45", "11:00", "11:15", "11:30", "11:45", "12:00"]);
    expect(ticks.at(-1)?.x).toBe(1000);
  });

  it("labels seconds and days when the step needs it", () => {
    expect(tickLabel(Date.UTC(2026, 11, 1, 9, 5, 30), 10_000)).toBe("09:05:30");
    expect(tickLabel(Date.UTC(2026, 11, 1), 86_400_000)).toBe("12-01");
    const week = timeScale("2026-11-24T00:00:00Z", "2026-12-01T00:00:00Z", 0, 700);
    expect(timeTicks(week, 8).map((t) => t.label)).toContain("11-28");
  });
});
