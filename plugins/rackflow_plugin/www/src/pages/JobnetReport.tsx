// The jobnet report (a tab on every DAG run): the run's steps as a Gantt chart — each stage a band
// whose parallel steps sit side by side in time, each bar with its server, duration and exit code —
// then, after a failure, the reverts in the order they ran (the stages undone in reverse). Below it,
// the table of steps with their output tails. It refreshes while the run is going.
import { Box, Code, Stack, Text } from "@chakra-ui/react";

import { getApi, seg } from "../shared/api";
import { formatDuration, formatUtc, secondsBetween } from "../shared/dates";
import { usePoll } from "../shared/poll";
import { stateColor } from "../shared/states";
import { DataTable, ErrorAlert, PageHeader, Section, StateBadge } from "../shared/ui";
import { firstFailure, formatStepSeconds, ganttSections, ganttSpan, laneLabel, stepState, type Report } from "../viz/gantt";
import { timeScale, timeTicks, token } from "../viz/scale";
import type { PageProps } from "./index";

const W = 1200;
const LABEL_W = 200;
const AXIS_H = 22;
const LANE_H = 22;
const SECTION_GAP = 18;
const REPORT_POLL_MS = 5_000;

/** Colour of a bar: the state's palette ("succeeded" is a success, "none" has no colour). */
const barColor = (state: string): string => {
  if (state === "succeeded") return token("green.solid");
  if (state === "none" || state === "not_run") return token("bg.emphasized");
  return token(`${stateColor(state)}.solid`);
};

function Gantt({ report }: { report: Report }) {
  const sections = ganttSections(report);
  const [start, end] = ganttSpan(report);
  const s = timeScale(start, end, LABEL_W, W - 10);
  // Each section: a 14 px title line, then its lanes, then a gap.
  let y = AXIS_H;
  const placed = sections.map((sec) => {
    const top = y + 14;
    y = top + sec.lanes.length * LANE_H + SECTION_GAP;
    return { sec, top };
  });
  const height = y + 4;
  const failure = firstFailure(report);
  const failX = failure ? s.x(failure.ended_at) : null;
  return (
    <svg viewBox={`0 0 ${W} ${height}`} width="100%" role="img" aria-label="jobnet Gantt chart" data-testid="gantt" style={{ fontSize: 11 }}>
      {timeTicks(s, 10).map((t) => (
        <g key={t.at}>
          <line x1={t.x} x2={t.x} y1={AXIS_H - 4} y2={height} stroke={token("border")} />
          <text x={t.x} y={AXIS_H - 8} textAnchor="middle" fill={token("fg.muted")}>
            {t.label}
          </text>
        </g>
      ))}
      <text x={4} y={AXIS_H - 8} fill={token("fg.muted")}>
        UTC
      </text>
      {placed.map(({ sec, top }) => (
        <g key={`${sec.kind}-${sec.group}`} data-section={`${sec.kind}-${sec.group}`}>
          <rect
            x={0}
            y={top - 14}
            width={W}
            height={sec.lanes.length * LANE_H + 16}
            fill={sec.kind === "revert" ? token("orange.subtle") : token("bg.subtle")}
            opacity={0.6}
          />
          <text x={4} y={top - 3} fill={token("fg.muted")} fontWeight={600}>
            {sec.kind === "revert" ? `↩ ${sec.title}` : sec.title}
          </text>
          {sec.lanes.map((lane, i) => {
            const ly = top + i * LANE_H + 2;
            const x0 = lane.start ? s.x(lane.start) : null;
            const x1 = lane.end ? s.x(lane.end) : lane.start ? s.x(new Date()) : null;
            const label = laneLabel(lane);
            const width = x0 !== null && x1 !== null ? Math.max(3, x1 - x0) : 0;
            const inside = width > label.length * 6 + 8;
            return (
              <g
                key={`${lane.kind}-${lane.step.step_id}`}
                className="lane"
                data-lane={lane.kind}
                data-step={lane.step.step_id}
                data-state={lane.state}
              >
                <text x={14} y={ly + 13} fill={token("fg")}>
                  {lane.kind === "revert" ? `↩ ${lane.step.step_id}` : lane.step.step_id}
                </text>
                {x0 !== null ? (
                  <>
                    <rect
                      x={x0}
                      y={ly}
                      width={width}
                      height={LANE_H - 5}
                      rx={3}
                      fill={barColor(lane.state)}
                      stroke={lane.kind === "revert" ? token("orange.fg") : "none"}
                      strokeDasharray={lane.kind === "revert" ? "4 2" : undefined}
                    >
                      <title>{`${label} · ${formatUtc(lane.start)} → ${lane.end ? formatUtc(lane.end) : "running"}`}</title>
                    </rect>
                    <text
                      x={inside ? x0 + 5 : x0 + width + 5}
                      y={ly + 12}
                      fill={inside ? token("fg.inverted") : token("fg")}
                      style={{ pointerEvents: "none" }}
                    >
                      {label}
                    </text>
                  </>
                ) : (
                  <text x={LABEL_W + 4} y={ly + 12} fill={token("fg.muted")}>
                    {lane.kind === "revert" ? "not reverted" : `not run${lane.state !== "not_run" ? ` (${lane.state})` : ""}`}
                  </text>
                )}
              </g>
            );
          })}
        </g>
      ))}
      {failX !== null ? (
        <g data-testid="failure-mark">
          <line x1={failX} x2={failX} y1={AXIS_H - 4} y2={height} stroke={token("red.solid")} strokeWidth={1.5} strokeDasharray="5 3" />
          <text x={failX + 4} y={AXIS_H + 8} fill={token("red.fg")}>
            {failure?.step_id} failed
          </text>
        </g>
      ) : null}
    </svg>
  );
}

export function JobnetReport({ dagId, runId }: PageProps) {
  const report = usePoll(
    (signal) =>
      dagId && runId
        ? getApi<Report>(`jobnets/${seg(dagId)}/runs/${seg(runId)}/report`, undefined, signal)
        : Promise.reject(new Error("open this page from a DAG run (it needs the DAG and run ids)")),
    [dagId, runId],
    REPORT_POLL_MS,
  );
  const r = report.data;
  const took = r ? secondsBetween(r.run_started_at, r.run_ended_at) : null;
  return (
    <Box data-testid="jobnet-report">
      <PageHeader title={r ? `jobnet ${r.jobnet}` : "jobnet report"} updatedAt={report.updatedAt} loading={report.loading} />
      <ErrorAlert error={report.error} what="the jobnet report" />
      {r ? (
        <Stack gap={4}>
          <Text fontSize="sm" data-testid="summary">
            run {r.run_id} · <StateBadge state={r.run_state} /> · started {formatUtc(r.run_started_at)}
            {took !== null ? ` · took ${formatDuration(took)}` : ""}
            {r.revert_order.length ? ` · revert order: ${r.revert_order.map((g) => g.join(" + ")).join(" → ")}` : ""}
          </Text>
          <Section title="Steps over time" testId="gantt-section">
            <Gantt report={r} />
          </Section>
          <Section title="Steps" testId="steps">
            <DataTable
              rows={r.steps}
              rowKey={(s) => s.step_id}
              rowProps={(s) => ({ "data-step": s.step_id })}
              columns={[
                { key: "stage", header: "stage" },
                { key: "step_id", header: "step" },
                { key: "server", header: "server" },
                {
                  key: "state",
                  header: "state",
                  render: (s) => <StateBadge state={stepState(s) === "succeeded" ? "success" : stepState(s)} label={stepState(s) + (s.timed_out ? " (timeout)" : "")} />,
                },
                { key: "exit_code", header: "exit", render: (s) => (s.exit_code ?? "").toString() },
                { key: "duration", header: "ran", render: (s) => (s.duration_s === null ? "" : formatStepSeconds(s.duration_s)) },
                {
                  key: "reverted",
                  header: "reverted",
                  render: (s) => s.reverted + (s.revert_exit_code !== null && s.revert_exit_code !== 0 ? ` (exit ${s.revert_exit_code})` : ""),
                },
                {
                  key: "output",
                  header: "output tail",
                  render: (s) =>
                    s.output_tail || s.revert_output_tail ? (
                      <Code display="block" whiteSpace="pre-wrap" maxH="7rem" maxW="36rem" overflow="auto" fontSize="xs">
                        {s.output_tail}
                        {s.revert_output_tail ? `\n--- revert ---\n${s.revert_output_tail}` : ""}
                      </Code>
                    ) : null,
                },
              ]}
            />
          </Section>
        </Stack>
      ) : null}
    </Box>
  );
}
