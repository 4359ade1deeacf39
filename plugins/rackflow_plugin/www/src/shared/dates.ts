// Dates on rackflow's pages: every timestamp is shown in UTC with its zone, whatever the browser's zone.

/**
 * A server timestamp as a Date. The API writes ISO 8601 with an offset; a value without one (an
 * older row read back naive) is UTC, never the browser's local time.
 */
export function parseUtc(value: string | number | Date | null | undefined): Date | null {
  if (value === null || value === undefined || value === "") return null;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value;
  if (typeof value === "number") return new Date(value);
  let text = value.trim();
  const hasZone = /(Z|[+-]\d{2}:?\d{2})$/i.test(text);
  if (/^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}/.test(text)) {
    text = text.replace(" ", "T");
    if (!hasZone) text += "Z";
  }
  const at = new Date(text);
  return Number.isNaN(at.getTime()) ? null : at;
}

const pad = (n: number, width = 2): string => String(n).padStart(width, "0");

/** `2026-12-01 15:04:05 UTC` (empty for no date). */
export function formatUtc(value: string | number | Date | null | undefined, withSeconds = true): string {
  const at = parseUtc(value);
  if (!at) return "";
  const date = `${at.getUTCFullYear()}-${pad(at.getUTCMonth() + 1)}-${pad(at.getUTCDate())}`;
  const time = `${pad(at.getUTCHours())}:${pad(at.getUTCMinutes())}` + (withSeconds ? `:${pad(at.getUTCSeconds())}` : "");
  return `${date} ${time} UTC`;
}

/** `15:04:05 UTC`, for "last updated" lines. */
export function formatUtcTime(value: string | number | Date | null | undefined): string {
  const at = parseUtc(value);
  return at ? `${pad(at.getUTCHours())}:${pad(at.getUTCMinutes())}:${pad(at.getUTCSeconds())} UTC` : "";
}

/** A duration in seconds as `1h 02m`, `3m 05s` or `42s` (empty for none). */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) return `${d}d ${pad(h)}h`;
  if (h) return `${h}h ${pad(m)}m`;
  if (m) return `${m}m ${pad(sec)}s`;
  return `${sec}s`;
}

/** How long ago `value` was, relative to `now`: `12s ago`, `5m 03s ago`, `in 4m 00s` for the future. */
export function formatAgo(value: string | number | Date | null | undefined, now: Date = new Date()): string {
  const at = parseUtc(value);
  if (!at) return "";
  const delta = (now.getTime() - at.getTime()) / 1000;
  return delta >= 0 ? `${formatDuration(delta)} ago` : `in ${formatDuration(-delta)}`;
}

/** Seconds between two timestamps (null when either is missing). */
export function secondsBetween(
  start: string | number | Date | null | undefined,
  end: string | number | Date | null | undefined,
): number | null {
  const a = parseUtc(start);
  const b = parseUtc(end);
  return a && b ? (b.getTime() - a.getTime()) / 1000 : null;
}

/** A short latency: `0.8 s`, `12.4 s`, then as {@link formatDuration} from a minute on. */
export function formatSeconds(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  return Math.abs(seconds) < 60 ? `${seconds.toFixed(1)} s` : formatDuration(seconds);
}
