import { describe, expect, it } from "vitest";

import { formatAgo, formatDuration, formatSeconds, formatUtc, formatUtcTime, parseUtc, secondsBetween } from "./dates";

describe("parseUtc", () => {
  it("keeps an explicit offset and reads a naive timestamp as UTC, never local time", () => {
    expect(parseUtc("2026-12-01T15:04:05+01:00")?.toISOString()).toBe("2026-12-01T14:04:05.000Z");
    expect(parseUtc("2026-12-01T15:04:05")?.toISOString()).toBe("2026-12-01T15:04:05.000Z");
    expect(parseUtc("2026-12-01 15:04:05.123456")?.toISOString()).toBe("2026-12-01T15:04:05.123Z");
    expect(parseUtc("2026-12-01T15:04:05Z")?.toISOString()).toBe("2026-12-01T15:04:05.000Z");
  });

  it("gives null for nothing and for garbage", () => {
    expect(parseUtc(null)).toBeNull();
    expect(parseUtc("")).toBeNull();
    expect(parseUtc("yesterday")).toBeNull();
  });
});

describe("formatting", () => {
  it("shows UTC with its zone whatever the browser's zone", () => {
    expect(formatUtc("2026-12-01T23:30:00-02:00")).toBe("2026-12-02 01:30:00 UTC");
    expect(formatUtc("2026-12-01T23:30:00Z", false)).toBe("2026-12-01 23:30 UTC");
    expect(formatUtcTime("2026-12-01T08:05:09Z")).toBe("08:05:09 UTC");
    expect(formatUtc(undefined)).toBe("");
  });

  it("writes durations and ages compactly", () => {
    expect(formatDuration(42)).toBe("42s");
    expect(formatDuration(185)).toBe("3m 05s");
    expect(formatDuration(3720)).toBe("1h 02m");
    expect(formatDuration(90000)).toBe("1d 01h");
    expect(formatDuration(null)).toBe("");
    expect(formatSeconds(0.84)).toBe("0.8 s");
    expect(formatSeconds(75)).toBe("1m 15s");
    expect(formatSeconds(undefined)).toBe("");
    const now = new Date("2026-12-01T12:00:00Z");
    expect(formatAgo("2026-12-01T11:59:30Z", now)).toBe("30s ago");
    expect(formatAgo("2026-12-01T12:04:00Z", now)).toBe("in 4m 00s");
    expect(secondsBetween("2026-12-01T12:00:00Z", "2026-12-01T12:00:02.5Z")).toBe(2.5);
    expect(secondsBetween(null, "2026-12-01T12:00:00Z")).toBeNull();
  });
});
