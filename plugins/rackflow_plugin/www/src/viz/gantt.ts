// The jobnet report as a Gantt chart: one lane per step, lanes grouped by stage (a stage's steps run in
// parallel, so their bars sit side by side in time), then the reverts in the order the revert plan
// ran them (the reverse of the stages), after the failure. Pure; tested in gantt.test.ts.
import { parseUtc, secondsBetween } from "../shared/dates";

export interface ReportStep {
  step_id: string;
  server: string;
  state: string;
  exit_code: number | null;
  duration_s: number | null;
  output_tail: string;
  reverted: string;
  task_id: string;
  task_state: string | null;
  timed_out: boolean;
  revert_task_id: string | null;
  revert_task_state: string | null;
  revert_exit_code: number | null;
  revert_output_tail: string;
  stage: number;
  started_at: string | null;
  ended_at: string | null;
  revert_started_at: string | null;
  revert_ended_at: string | null;
}

export interface Report {
  dag_id: string;
  run_id: string;
  jobnet: string;
  run_state: string | null;
  steps: ReportStep[];
  revert_order: string[][];
  stages: string[][];
  run_started_at: string | null;
  run_ended_at: string | null;
}

export interface Lane {
  kind: "step" | "revert";
  /** Stage number for steps; revert group number (1 = first undone) for reverts. */
  group: number;
  step: ReportStep;
  start: string | null;
  end: string | null;
  /** What the bar's colour says: the step's state, or the revert's outcome. */
  state: string;
  exitCode: number | null;
  /** How long the step's command ran on its server (the step's own figure), else the bar's span. */
  seconds: number | null;
  /** The bar's span: the task from start to end (it includes task start-up and polling). */
  spanSeconds: number | null;
}

export interface Section {
  kind: "step" | "revert";
  group: number;
  title: string;
  lanes: Lane[];
}

const RUNNING = new Set(["running", "queued", "scheduled", "deferred", "up_for_retry", "restarting"]);

/** The state a step's bar shows: its report state, or the task's while it has not finished. */
export function stepState(s: ReportStep): string {
  if (s.state === "not_run" && s.task_state) return s.task_state;
  return s.state;
}

function revertState(s: ReportStep): string {
  if (s.reverted === "yes") return "success";
  if (s.reverted === "failed") return "failed";
  return s.revert_task_state ?? "none";
}

/** Stage sections in run order, then revert sections in the order the reverts ran. */
export function ganttSections(report: Report): Section[] {
  const byId = new Map(report.steps.map((s) => [s.step_id, s]));
  const sections: Section[] = report.stages.map((ids, i) => ({
    kind: "step",
    group: i + 1,
    title: ids.length > 1 ? `stage ${i + 1} · ${ids.length} in parallel` : `stage ${i + 1}`,
    lanes: ids
      .map((id) => byId.get(id))
      .filter((s): s is ReportStep => s !== undefined)
      .map((s) => ({
        kind: "step",
        group: i + 1,
        step: s,
        start: s.started_at,
        end: s.ended_at,
        state: stepState(s),
        exitCode: s.exit_code,
        seconds: s.duration_s ?? secondsBetween(s.started_at, s.ended_at),
        spanSeconds: secondsBetween(s.started_at, s.ended_at),
      })),
  }));
  report.revert_order.forEach((ids, i) => {
    const lanes: Lane[] = ids
      .map((id) => byId.get(id))
      .filter((s): s is ReportStep => s !== undefined && s.revert_task_id !== null)
      .map((s) => ({
        kind: "revert",
        group: i + 1,
        step: s,
        start: s.revert_started_at,
        end: s.revert_ended_at,
        state: revertState(s),
        exitCode: s.revert_exit_code,
        seconds: secondsBetween(s.revert_started_at, s.revert_ended_at),
        spanSeconds: secondsBetween(s.revert_started_at, s.revert_ended_at),
      }));
    if (lanes.length) sections.push({ kind: "revert", group: i + 1, title: `revert ${i + 1} of ${report.revert_order.length}`, lanes });
  });
  return sections;
}

/** The time span the chart covers: first start to last end (now for a run still going). */
export function ganttSpan(report: Report, now: Date = new Date()): [Date, Date] {
  const times: number[] = [];
  for (const s of report.steps) {
    for (const v of [s.started_at, s.ended_at, s.revert_started_at, s.revert_ended_at]) {
      const at = parseUtc(v);
      if (at) times.push(at.getTime());
    }
  }
  const start = parseUtc(report.run_started_at)?.getTime() ?? (times.length ? Math.min(...times) : now.getTime());
  const going = report.run_state !== null && RUNNING.has(report.run_state);
  const last = times.length ? Math.max(...times) : start;
  const end = going ? Math.max(now.getTime(), last) : (parseUtc(report.run_ended_at)?.getTime() ?? last);
  return [new Date(start), new Date(Math.max(end, start + 1000))];
}

/** The failure the reverts answer: the first failed step by end time (null when nothing failed). */
export function firstFailure(report: Report): ReportStep | null {
  const failed = report.steps.filter((s) => s.state === "failed" && s.ended_at);
  failed.sort((a, b) => (parseUtc(a.ended_at)?.getTime() ?? 0) - (parseUtc(b.ended_at)?.getTime() ?? 0));
  return failed[0] ?? null;
}

/** A step's time: `5 ms` under a second (never `0.0s`), `3.2s` under ten, then whole seconds. */
export function formatStepSeconds(seconds: number): string {
  if (seconds < 1) return seconds < 0.001 ? "<1 ms" : `${Math.round(seconds * 1000)} ms`;
  return seconds < 10 ? `${seconds.toFixed(1)}s` : `${Math.round(seconds)}s`;
}

/** A bar's label: `step · server · 3.2s · exit 0`; when the command took much less than the bar's
 * task (start-up and polling included): `step · server · 5 ms (task 15s) · exit 0`. */
export function laneLabel(lane: Lane): string {
  const parts = [lane.kind === "revert" ? `↩ ${lane.step.step_id}` : lane.step.step_id, lane.step.server];
  if (lane.seconds !== null) {
    const span = lane.spanSeconds;
    const task = span !== null && span - lane.seconds >= 1 ? ` (task ${formatStepSeconds(span)})` : "";
    parts.push(`${formatStepSeconds(lane.seconds)}${task}`);
  }
  if (lane.exitCode !== null) parts.push(`exit ${lane.exitCode}`);
  if (lane.kind === "step" && lane.step.timed_out) parts.push("timed out");
  return parts.join(" · ");
}
