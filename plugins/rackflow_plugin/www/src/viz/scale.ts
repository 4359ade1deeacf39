// Time axes of the drawn pages (power timeline, jobnet Gantt): a linear map from UTC instants to
// pixels, and tick marks at round UTC steps. Pure functions, tested in scale.test.ts.
import { parseUtc } from "../shared/dates";

export type Instant = string | number | Date | null | undefined;

export interface TimeScale {
  start: number;
  end: number;
  x0: number;
  x1: number;
  /** The x of an instant (clamped to the axis when `clamp`). */
  x: (at: Instant, clamp?: boolean) => number;
}

const ms = (at: Instant): number => parseUtc(at)?.getTime() ?? Number.NaN;

/** Maps [start, end] onto [x0, x1] pixels; an empty span is widened to one second. */
export function timeScale(start: Instant, end: Instant, x0: number, x1: number): TimeScale {
  const a = ms(start);
  let b = ms(end);
  if (!(b > a)) b = a + 1000;
  const k = (x1 - x0) / (b - a);
  return {
    start: a,
    end: b,
    x0,
    x1,
    x: (at, clamp = true) => {
      const v = x0 + (ms(at) - a) * k;
      return clamp ? Math.min(x1, Math.max(x0, v)) : v;
    },
  };
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const STEPS = [
  SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND,
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY,
];

const pad = (n: number): string => String(n).padStart(2, "0");

/** A tick's label in UTC: `15:30`, `15:30:10` below a minute's step, `12-01` at day steps. */
export function tickLabel(at: number, step: number): string {
  const d = new Date(at);
  if (step >= DAY) return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  return step < MINUTE ? `${hm}:${pad(d.getUTCSeconds())}` : hm;
}

/** Ticks at a round UTC step giving at most `most` marks over the scale's span. */
export function timeTicks(scale: TimeScale, most = 8): { at: number; x: number; label: string }[] {
  const span = scale.end - scale.start;
  const step = STEPS.find((s) => span / s <= most) ?? Math.ceil(span / most / DAY) * DAY;
  const first = Math.ceil(scale.start / step) * step;
  const out = [];
  for (let at = first; at <= scale.end; at += step) out.push({ at, x: scale.x(at), label: tickLabel(at, step) });
  return out;
}

/** A chakra colour token as a CSS value (follows Airflow's theme, light or dark). */
export const token = (name: string): string => `var(--chakra-colors-${name.replace(/\./g, "-")})`;
