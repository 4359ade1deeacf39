// The S3 intake page: per intake its bucket, paused or live, counts by status and the recent jobs
// with their status object's lines (status, scheduler job id, reason) in columns that fit the box.
import { Flex, Stack, Text } from "@chakra-ui/react";

import { getApi } from "../shared/api";
import { formatAgo, formatSeconds, formatUtc } from "../shared/dates";
import { dagLink, jobLink } from "../shared/links";
import { usePoll } from "../shared/poll";
import { DataTable, ErrorAlert, AppLink, PageHeader, Section, StateBadge } from "../shared/ui";

export interface IntakeJob {
  prefix: string;
  status: string;
  scheduler_job_id: string | null;
  reason: string | null;
  problem: string | null;
  updated_at: string | null;
  job_id: string | null;
  queued_latency_s: number | null;
}

export interface IntakeOut {
  name: string;
  dag_id: string;
  bucket: string;
  scheduler: string;
  paused: boolean | null;
  counts: Record<string, number>;
  jobs: IntakeJob[];
  total: number;
  read_at: string | null;
  error: string | null;
}

export interface IntakeList {
  intakes: IntakeOut[];
}

/** The statuses of the S3 protocol in the order a job passes them. */
export const INTAKE_STATUSES = ["FILE_UPLOAD", "ACCEPTED", "QUEUED", "RUNNING", "STAGING_OUT", "COMPLETED", "FAILED", "CANCELED", "UNKNOWN"];

/** Waiting (FILE_UPLOAD) and in-progress counts of an intake, for the dashboard's queue column. */
export function queueOf(counts: Record<string, number>): { waiting: number; active: number } {
  const active = ["ACCEPTED", "QUEUED", "RUNNING", "STAGING_OUT"].reduce((n, s) => n + (counts[s] ?? 0), 0);
  return { waiting: counts.FILE_UPLOAD ?? 0, active };
}

/** The status object's lines as one: `RUNNING · 1234 · reason`. */
export const statusLine = (j: IntakeJob): string =>
  [j.status, j.scheduler_job_id ?? "", j.reason ?? j.problem ?? ""].filter(Boolean).join(" · ");

function IntakeBlock({ intake }: { intake: IntakeOut }) {
  return (
    <Section
      testId={`intake-${intake.name}`}
      title={
        <Flex gap={3} align="center">
          <Text>{intake.name}</Text>
          <Text fontSize="sm" color="fg.muted" fontFamily="mono">
            s3://{intake.bucket}
          </Text>
          <StateBadge state={intake.paused ? "paused" : intake.paused === null ? "unknown" : "live"} label={intake.paused ? "paused" : intake.paused === null ? "not parsed yet" : "live"} />
          <Text fontSize="sm" color="fg.muted">
            {intake.scheduler} · DAG <AppLink to={dagLink(intake.dag_id)}>{intake.dag_id}</AppLink>
          </Text>
        </Flex>
      }
    >
      {intake.error ? <ErrorAlert error={new Error(intake.error)} what={`bucket ${intake.bucket}`} /> : null}
      <Flex gap={2} wrap="wrap" mb={3} data-testid="intake-counts">
        {INTAKE_STATUSES.filter((s) => s !== "UNKNOWN" || intake.counts[s]).map((s) => (
          <StateBadge key={s} state={s} label={`${s} ${intake.counts[s] ?? 0}`} />
        ))}
      </Flex>
      <DataTable
        testId="intake-jobs"
        rows={intake.jobs}
        rowKey={(j) => j.prefix}
        empty="no jobs in the bucket"
        columns={[
          // The box is the page's width: long prefixes, job ids and reasons wrap instead of pushing
          // the last columns out of sight (a FAILED reason is a whole sentence).
          { key: "prefix", header: "job (prefix)", render: (j) => <Text fontFamily="mono" whiteSpace="normal" wordBreak="break-all" minW="8rem" maxW="18rem">{j.prefix}/</Text> },
          { key: "status", header: "status", render: (j) => <StateBadge state={j.status} /> },
          { key: "scheduler", header: "scheduler job", render: (j) => j.scheduler_job_id ?? "" },
          {
            key: "line",
            header: "reason",
            render: (j) => (
              <Text fontSize="xs" whiteSpace="normal" wordBreak="break-word" minW="12rem" title={statusLine(j)}>
                {j.reason ?? j.problem ?? ""}
              </Text>
            ),
          },
          {
            key: "latency",
            header: (
              <span title="FILE_UPLOAD → QUEUED: from the uploader's last write to the scheduler's job id">
                to QUEUED
              </span>
            ),
            align: "end",
            render: (j) => formatSeconds(j.queued_latency_s),
          },
          {
            key: "job",
            header: "job",
            render: (j) =>
              j.job_id ? (
                <Text whiteSpace="normal" wordBreak="break-all" minW="8rem" maxW="14rem">
                  <AppLink to={jobLink(j.job_id)}>{j.job_id}</AppLink>
                </Text>
              ) : (
                ""
              ),
          },
          { key: "updated", header: "status written", render: (j) => <span title={formatUtc(j.updated_at)}>{formatAgo(j.updated_at)}</span> },
        ]}
      />
      <Text fontSize="xs" color="fg.muted" mt={1}>
        {intake.total > intake.jobs.length ? `${intake.jobs.length} most recent of ${intake.total} · ` : ""}
        bucket read {formatUtc(intake.read_at)}
      </Text>
    </Section>
  );
}

export function Intake() {
  const intakes = usePoll((signal) => getApi<IntakeList>("intakes", { limit: 50 }, signal), [], 5_000);
  return (
    <>
      <PageHeader title="S3 intake" updatedAt={intakes.updatedAt} loading={intakes.loading} />
      <ErrorAlert error={intakes.error} what="the S3 intakes" />
      <Stack gap={4}>
        {(intakes.data?.intakes ?? []).map((i) => (
          <IntakeBlock key={i.name} intake={i} />
        ))}
        {intakes.data && intakes.data.intakes.length === 0 ? <Text color="fg.muted">no S3 intake you may read</Text> : null}
      </Stack>
    </>
  );
}
