import { firstFailure, formatStepSeconds, ganttSections, ganttSpan, laneLabel, type Report, type ReportStep } from "./gantt";

const step = (id: string, stage: number, start: string, end: string, extra: Partial<ReportStep> = {}): ReportStep => ({
  step_id: id,
  server: id.split("-").at(-1) ?? "",
  state: "succeeded",
  exit_code: 0,
  duration_s: null,
  output_tail: "",
  reverted: "yes",
  task_id: id,
  task_state: "success",
  timed_out: false,
  revert_task_id: `revert.${id}`,
  revert_task_state: "success",
  revert_exit_code: 0,
  revert_output_tail: "",
  stage,
  started_at: `2026-12-01T10:00:${start}Z`,
  ended_at: `2026-12-01T10:00:${end}Z`,
  revert_started_at: null,
  revert_ended_at: null,
  ...extra,
});

const report: Report = {
  dag_id: "jobnet_x",
  run_id: "r1",
  jobnet: "x",
  run_state: "failed",
  stages: [["install-nn", "install-dn1"], ["smoke-nn"]],
  revert_order: [["install-nn", "install-dn1"]],
  run_started_at: "2026-12-01T10:00:00Z",
  run_ended_at: "2026-12-01T10:00:30Z",
  steps: [
    step("install-nn", 1, "01", "05", { revert_started_at: "2026-12-01T10:00:12Z", revert_ended_at: "2026-12-01T10:00:14Z" }),
    step("install-dn1", 1, "01", "06", {
      revert_started_at: "2026-12-01T10:00:12Z",
      revert_ended_at: "2026-12-01T10:00:15Z",
      reverted: "failed",
      revert_exit_code: 3,
    }),
    step("smoke-nn", 2, "07", "10", { state: "failed", exit_code: 1, reverted: "none", revert_task_id: null }),
  ],
};

describe("ganttSections", () => {
  it("gives a section per stage with its parallel steps, then the reverts after the failure", () => {
    const sections = ganttSections(report);
    expect(sections.map((s) => [s.kind, s.title, s.lanes.map((l) => l.step.step_id)])).toEqual([
      ["step", "stage 1 · 2 in parallel", ["install-nn", "install-dn1"]],
      ["step", "stage 2", ["smoke-nn"]],
      ["revert", "revert 1 of 1", ["install-nn", "install-dn1"]],
    ]);
    const [, smoke, reverts] = sections;
    expect(smoke.lanes[0]).toMatchObject({ state: "failed", exitCode: 1, seconds: 3 });
    expect(reverts.lanes.map((l) => [l.state, l.exitCode, l.seconds])).toEqual([
      ["success", 0, 2],
      ["failed", 3, 3],
    ]);
    const failedAt = Date.parse(firstFailure(report)?.ended_at ?? "");
    for (const lane of reverts.lanes) expect(Date.parse(lane.start ?? "")).toBeGreaterThanOrEqual(failedAt);
  });

  it("shows a step that has not finished by its task's state", () => {
    const running = { ...report, steps: [step("install-nn", 1, "01", "05", { state: "not_run", task_state: "running" })] };
    expect(ganttSections(running)[0].lanes[0].state).toBe("running");
  });
});

describe("ganttSpan and labels", () => {
  it("spans the run, or up to now while it runs", () => {
    const [a, b] = ganttSpan(report);
    expect([a.toISOString(), b.toISOString()]).toEqual(["2026-12-01T10:00:00.000Z", "2026-12-01T10:00:30.000Z"]);
    const now = new Date("2026-12-01T10:05:00Z");
    expect(ganttSpan({ ...report, run_state: "running", run_ended_at: null }, now)[1]).toEqual(now);
  });

  it("labels a bar with step, server, duration and exit code", () => {
    const [first, , reverts] = ganttSections(report);
    expect(laneLabel(first.lanes[0])).toBe("install-nn · nn · 4.0s · exit 0");
    expect(laneLabel(reverts.lanes[1])).toBe("↩ install-dn1 · dn1 · 3.0s · exit 3");
  });

  it("gives a sub-second step in milliseconds, never 0.0s, and the task's span when it is much longer", () => {
    expect(formatStepSeconds(0.005)).toBe("5 ms");
    expect(formatStepSeconds(0.0002)).toBe("<1 ms");
    expect(formatStepSeconds(3.24)).toBe("3.2s");
    expect(formatStepSeconds(14.6)).toBe("15s");
    // make demo's jobnet: each step's command ran 5 ms, its task 14.6 s (start-up and polling).
    const quick = { ...report, steps: [step("install-nn", 1, "14", "28.6", { duration_s: 0.005 })], revert_order: [] };
    const [stage] = ganttSections(quick);
    expect(laneLabel(stage.lanes[0])).toBe("install-nn · nn · 5 ms (task 15s) · exit 0");
    const same = { ...report, steps: [step("install-nn", 1, "01", "05", { duration_s: 3.6 })], revert_order: [] };
    expect(laneLabel(ganttSections(same)[0].lanes[0])).toBe("install-nn · nn · 3.6s · exit 0");
  });
});
