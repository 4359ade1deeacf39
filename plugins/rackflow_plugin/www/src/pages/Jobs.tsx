// Batch jobs: the caller's jobs (admins: everyone's) with filters, one job's page, and the submit
// form. Viewers (no right to submit) read, never act: the form and Terminate are not shown to them,
// and the API refuses them anyway.
import { Box, Button, Code, Flex, Grid, HStack, Input, NativeSelect, Stack, Tabs, Text, Textarea } from "@chakra-ui/react";
import { useState, type ChangeEvent } from "react";
import { Route, Routes, useNavigate, useParams, useSearchParams } from "react-router-dom";

import { ApiError, getApi, postApi, problemsOf, seg } from "../shared/api";
import { formatAgo, formatDuration, formatUtc } from "../shared/dates";
import { jobLink, jobsLink } from "../shared/links";
import { usePoll } from "../shared/poll";
import { JOB_STATES } from "../shared/states";
import { jobsHeading, useStatus } from "../shared/status";
import type { Job, JobList, JobOutput } from "../shared/types";
import { AppLink, DataTable, ErrorAlert, Notice, PageHeader, Section, StateBadge } from "../shared/ui";

const FINAL = new Set(["COMPLETED", "FAILED", "CANCELED"]);

/** Bytes as `512 B`, `3.2 MiB`. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function JobListPage() {
  const status = useStatus();
  const [params, setParams] = useSearchParams();
  const state = params.get("state") ?? "";
  const owner = params.get("owner") ?? "";
  const text = params.get("q") ?? "";
  const jobs = usePoll((signal) => getApi<JobList>("jobs", { state, limit: 1000 }, signal), [state]);
  const set = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    setParams(next, { replace: true });
  };
  const rows = (jobs.data?.jobs ?? []).filter(
    (j) => (!owner || j.owner === owner) && (!text || j.job_id.includes(text) || (j.message ?? "").includes(text)),
  );
  const owners = [...new Set((jobs.data?.jobs ?? []).map((j) => j.owner ?? ""))].filter(Boolean).sort();
  const shared = status && !status.admin ? (jobs.data?.jobs ?? []).filter((j) => j.owner !== status.user).length : 0;
  return (
    <>
      <PageHeader title={jobsHeading(status, (jobs.data?.jobs ?? []).map((j) => j.owner))} updatedAt={jobs.updatedAt} loading={jobs.loading} />
      {shared ? (
        <Text fontSize="sm" color="fg.muted" mb={2} data-testid="shared-jobs">
          Yours, and {shared} S3 intake job{shared === 1 ? "" : "s"} an intake shares with you (its visible_to names you):
          their owner is the intake&apos;s account, “from” their bucket prefix.
        </Text>
      ) : null}
      {status?.can_submit_jobs ? (
        <SubmitForm onSubmitted={jobs.refresh} />
      ) : status ? (
        <Text fontSize="sm" color="fg.muted" data-testid="read-only">
          Read only: {status.user} may read jobs but not submit or terminate them.
        </Text>
      ) : null}
      <HStack gap={3} my={3} wrap="wrap" data-testid="job-filters">
        <NativeSelect.Root size="sm" width="12rem">
          <NativeSelect.Field aria-label="state" value={state} onChange={(e) => set("state", e.target.value)} name="state">
            <option value="">every state</option>
            {JOB_STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </NativeSelect.Field>
          <NativeSelect.Indicator />
        </NativeSelect.Root>
        {status?.admin || owners.length > 1 ? (
          <NativeSelect.Root size="sm" width="12rem">
            <NativeSelect.Field aria-label="owner" value={owner} onChange={(e) => set("owner", e.target.value)} name="owner">
              <option value="">every user</option>
              {owners.map((o) => (
                <option key={o} value={o}>
                  {o}
                </option>
              ))}
            </NativeSelect.Field>
            <NativeSelect.Indicator />
          </NativeSelect.Root>
        ) : null}
        <Input size="sm" width="16rem" placeholder="job id or message contains…" value={text} name="q" onChange={(e) => set("q", e.target.value)} />
        <Text fontSize="sm" color="fg.muted">
          {rows.length} of {jobs.data?.total ?? 0}
        </Text>
      </HStack>
      <ErrorAlert error={jobs.error} what="jobs" />
      <DataTable
        testId="jobs-table"
        rows={rows}
        rowKey={(j) => j.job_id}
        empty={state ? `no ${state} jobs` : "no jobs yet"}
        columns={[
          { key: "job_id", header: "job", render: (j) => <AppLink to={jobLink(j.job_id)}>{j.job_id}</AppLink> },
          { key: "state", header: "state", render: (j) => <StateBadge state={j.state} /> },
          { key: "owner", header: "owner" },
          { key: "source", header: "from", render: (j) => (j.source === "s3" ? <Code fontSize="xs">{j.origin}</Code> : "job API") },
          { key: "submitted", header: "submitted", render: (j) => <span title={formatUtc(j.submitted_at)}>{formatAgo(j.submitted_at)}</span> },
          { key: "scheduler", header: "scheduler job", render: (j) => [j.properties.scheduler, j.properties.scheduler_job_id].filter(Boolean).join(" ") },
          { key: "exit", header: "exit", align: "end", render: (j) => (j.properties.exit_code ?? "") as string },
          { key: "message", header: "message", render: (j) => <Text lineClamp={1}>{j.message ?? ""}</Text> },
        ]}
      />
    </>
  );
}

const EXAMPLE = JSON.stringify({ executable: "/bin/echo", arguments: ["hello"], attributes: { duration: 60 } }, null, 2);

/** Validates locally what can be (JSON syntax), then lets the API name each problem of the description. */
export function checkDescription(text: string, isXml: boolean): string | null {
  if (!text.trim()) return "the job description is empty";
  if (isXml) return text.trim().startsWith("<") ? null : "a JSDL document is XML: it starts with '<'";
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? null : "a JobSpec is a JSON object";
  } catch (exc) {
    return `not JSON: ${exc instanceof Error ? exc.message : String(exc)}`;
  }
}

function SubmitForm({ onSubmitted }: { onSubmitted: () => void }) {
  const [text, setText] = useState(EXAMPLE);
  const [isXml, setXml] = useState(false);
  const [busy, setBusy] = useState(false);
  const [problems, setProblems] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [submitted, setSubmitted] = useState<string | null>(null);
  const navigate = useNavigate();

  const upload = async (ev: ChangeEvent<HTMLInputElement>) => {
    const file = ev.target.files?.[0];
    if (!file) return;
    const content = await file.text();
    setText(content);
    setXml(/\.(xml|jsdl)$/i.test(file.name) || content.trim().startsWith("<"));
  };
  const submit = async () => {
    setProblems([]);
    setError(null);
    setSubmitted(null);
    const local = checkDescription(text, isXml);
    if (local) {
      setProblems([local]);
      return;
    }
    setBusy(true);
    try {
      const body = isXml ? text : (JSON.parse(text) as unknown);
      const out = await postApi<{ job_id: string }>("jobs", body, isXml ? "application/xml" : undefined);
      setSubmitted(out.job_id);
      onSubmitted();
    } catch (exc) {
      const listed = problemsOf(exc);
      if (listed.length) setProblems(listed);
      setError(exc);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Section title="Submit a job" testId="submit">
      <Stack gap={2}>
        <HStack gap={3}>
          <Text fontSize="sm">JSON JobSpec, or upload a JSDL (XML) or JSON file:</Text>
          <input type="file" accept=".json,.xml,.jsdl,application/json,application/xml" onChange={upload} data-testid="upload" />
          <Text fontSize="sm" color="fg.muted" data-testid="format">
            {isXml ? "JSDL (XML)" : "JSON"}
          </Text>
        </HStack>
        <Textarea
          name="description"
          fontFamily="mono"
          fontSize="sm"
          rows={8}
          value={text}
          onChange={(e) => {
            setText(e.target.value);
            setXml(e.target.value.trim().startsWith("<"));
          }}
        />
        <HStack>
          <Button size="sm" colorPalette="blue" onClick={submit} loading={busy} data-testid="submit-button">
            Submit
          </Button>
        </HStack>
        {submitted ? (
          <Notice kind="success">
            Submitted <AppLink to={jobLink(submitted)}>{submitted}</AppLink>{" "}
            <Button size="xs" variant="outline" onClick={() => navigate(jobLink(submitted))}>
              open
            </Button>
          </Notice>
        ) : null}
        {problems.length || error ? (
          <Box data-testid="problems">
            <Notice kind="error">
              {error instanceof ApiError ? `Refused (${error.status}): ` : "Not sent: "}
              {problems.length ? (
                <Box as="ul" pl={5} listStyleType="disc">
                  {problems.map((p) => (
                    <li key={p}>{p}</li>
                  ))}
                </Box>
              ) : (
                error instanceof Error ? error.message : String(error)
              )}
            </Notice>
          </Box>
        ) : null}
      </Stack>
    </Section>
  );
}

function Field({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <>
      <Text fontSize="sm" color="fg.muted">
        {label}
      </Text>
      <Box fontSize="sm" data-field={label}>
        {children}
      </Box>
    </>
  );
}

function OutputTail({ job, stream }: { job: Job; stream: "stdout" | "stderr" }) {
  if (job.source === "s3") {
    return (
      <Text color="fg.muted" fontSize="sm">
        An S3 intake job: its output files are uploaded back to <Code>{job.origin}</Code>.
      </Text>
    );
  }
  return <KeptOutput job={job} stream={stream} />;
}

function KeptOutput({ job, stream }: { job: Job; stream: "stdout" | "stderr" }) {
  const finished = FINAL.has(job.state);
  const out = usePoll(
    (signal) =>
      finished ? getApi<JobOutput>(`jobs/${seg(job.job_id)}/output`, { stream, tail: 200 }, signal) : Promise.resolve(null),
    [finished, job.job_id, stream],
    30_000,
  );
  if (!finished) return <Text color="fg.muted" fontSize="sm">kept when the job ends</Text>;
  if (out.error) {
    return out.error instanceof ApiError && out.error.status === 404 ? (
      <Text color="fg.muted" fontSize="sm">{out.error.message}</Text>
    ) : (
      <ErrorAlert error={out.error} what={stream} />
    );
  }
  const data = out.data;
  if (!data) return null;
  return (
    <Box data-testid={`output-${stream}`}>
      <Text fontSize="xs" color="fg.muted" mb={1}>
        {[data.path, data.size !== null ? formatBytes(data.size) : "", data.truncated ? "last lines only" : "", data.note ?? ""]
          .filter(Boolean)
          .join(" · ")}
      </Text>
      <Box as="pre" fontFamily="mono" fontSize="xs" p={3} bg="bg.muted" borderRadius="md" maxH="24rem" overflow="auto" whiteSpace="pre-wrap">
        {data.content || "(empty)"}
      </Box>
    </Box>
  );
}

function JobPage() {
  const { jobId = "" } = useParams();
  const status = useStatus();
  const job = usePoll((signal) => getApi<Job & { stage_in?: Staging[]; stage_out?: Staging[] }>(`jobs/${seg(jobId)}`, undefined, signal), [jobId], 5_000);
  const [acting, setActing] = useState(false);
  const [outcome, setOutcome] = useState<{ ok: boolean; text: string } | null>(null);
  const j = job.data;
  const terminate = async () => {
    setActing(true);
    try {
      const out = await postApi<{ message: string; state: string }>(`jobs/${seg(jobId)}/terminate`, { reason: "from the jobs page" });
      setOutcome({ ok: true, text: `${out.message} (${out.state})` });
      job.refresh();
    } catch (exc) {
      setOutcome({ ok: false, text: exc instanceof Error ? exc.message : String(exc) });
    } finally {
      setActing(false);
    }
  };
  return (
    <>
      <PageHeader title={`Job ${jobId}`} updatedAt={job.updatedAt} loading={job.loading}>
        <AppLink to={jobsLink()}>all jobs</AppLink>
      </PageHeader>
      <ErrorAlert error={job.error} what="this job" />
      {outcome ? <Notice kind={outcome.ok ? "success" : "error"}>{outcome.text}</Notice> : null}
      {j ? (
        <Stack gap={4}>
          <Section
            testId="job-summary"
            title={
              <HStack>
                <StateBadge state={j.state} />
                <Text>{j.message ?? ""}</Text>
                <Box flex="1" />
                {status?.can_submit_jobs && !FINAL.has(j.state) ? (
                  <Button size="sm" colorPalette="red" variant="outline" onClick={terminate} loading={acting} data-testid="terminate">
                    Terminate
                  </Button>
                ) : null}
              </HStack>
            }
          >
            <Grid templateColumns="10rem 1fr 10rem 1fr" gap={2}>
              <Field label="owner">{j.owner}</Field>
              <Field label="from">{j.source === "s3" ? <Code>{j.origin}</Code> : "job API"}</Field>
              <Field label="submitted">{formatUtc(j.submitted_at)}</Field>
              <Field label="scheduler">{[j.properties.scheduler, j.properties.scheduler_job_id].filter(Boolean).join(" job ")}</Field>
              <Field label="exit code">{j.properties.exit_code ?? ""}</Field>
              <Field label="wall time">{formatDuration(j.properties.wall_time)}</Field>
              <Field label="CPU time">{formatDuration(j.properties.cpu_time)}</Field>
              <Field label="peak memory">{formatBytes(j.properties.max_memory)}</Field>
              <Field label="nodes">{j.properties.nodes.join(", ")}</Field>
              <Field label="job directory">{j.properties.workdir ? <Code>{j.properties.workdir}</Code> : null}</Field>
              <Field label="Airflow run">{j.run_state ?? ""}</Field>
              {j.terminate_requested_by ? <Field label="terminate">requested by {j.terminate_requested_by}</Field> : null}
            </Grid>
          </Section>
          <Section title="Events" testId="job-events">
            <Stack gap={0} borderLeftWidth="2px" borderColor="border" pl={4}>
              {j.events.map((e, i) => (
                <Flex key={`${e.time}-${i}`} gap={3} py={1} align="baseline" data-event-state={e.state}>
                  <Text fontSize="xs" color="fg.muted" minW="12rem" fontFamily="mono">
                    {formatUtc(e.time)}
                  </Text>
                  <StateBadge state={e.state} />
                  <Text fontSize="sm">
                    {e.message}
                    {e.node ? ` (on ${e.node})` : ""}
                  </Text>
                </Flex>
              ))}
              {j.events.length === 0 ? <Text color="fg.muted">no events yet</Text> : null}
            </Stack>
          </Section>
          <Section title="Staging" testId="job-staging">
            {(j.stage_in ?? []).length || (j.stage_out ?? []).length ? (
              <>
                <StagingTable title="stage in" rows={j.stage_in ?? []} />
                <StagingTable title="stage out" rows={j.stage_out ?? []} />
              </>
            ) : (
              <Text fontSize="sm" color="fg.muted">
                nothing staged in or out
              </Text>
            )}
          </Section>
          <Section title="Output" testId="job-output">
            <Tabs.Root defaultValue="stdout" size="sm">
              <Tabs.List>
                <Tabs.Trigger value="stdout">stdout</Tabs.Trigger>
                <Tabs.Trigger value="stderr">stderr</Tabs.Trigger>
              </Tabs.List>
              <Tabs.Content value="stdout">
                <OutputTail job={j} stream="stdout" />
              </Tabs.Content>
              <Tabs.Content value="stderr">
                <OutputTail job={j} stream="stderr" />
              </Tabs.Content>
            </Tabs.Root>
          </Section>
        </Stack>
      ) : null}
    </>
  );
}

interface Staging {
  source: string;
  target: string;
}

function StagingTable({ title, rows }: { title: string; rows: Staging[] }) {
  return (
    <Box mb={2}>
      <Text fontSize="sm" fontWeight="semibold" mb={1}>
        {title}
      </Text>
      <DataTable
        rows={rows}
        rowKey={(r) => `${r.source}->${r.target}`}
        empty="nothing"
        columns={[
          { key: "source", header: "source", render: (r) => <Code>{r.source}</Code> },
          { key: "target", header: "target", render: (r) => <Code>{r.target}</Code> },
        ]}
      />
    </Box>
  );
}

export function Jobs() {
  return (
    <Routes>
      <Route index element={<JobListPage />} />
      <Route path="job/:jobId" element={<JobPage />} />
    </Routes>
  );
}
