// The rackflow nav entry: the fleet, jobs, S3 intake, power plan and recent failures at a glance,
// each block linking to its page. Every block reads its own route, so a user who may not read one
// part (403) still sees the others.
import { Box, Flex, HStack, Progress, SimpleGrid, Stack, Text } from "@chakra-ui/react";

import { getAirflow, getApi } from "../shared/api";
import { formatAgo, formatUtc } from "../shared/dates";
import { dagRunLink, jobLink, jobsLink, pageLink, ROUTES } from "../shared/links";
import { usePoll } from "../shared/poll";
import { JOB_STATES } from "../shared/states";
import { jobsHeading, useStatus } from "../shared/status";
import type { DagRun, Host, JobList, Layout, Plan } from "../shared/types";
import { AppLink, DataTable, ErrorAlert, PageHeader, Section, StateBadge } from "../shared/ui";
import { queueOf, type IntakeList } from "./Intake";

/** Counts of `items` by `key`, most frequent first. */
export function countBy<T>(items: T[], key: (item: T) => string): [string, number][] {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

function Capacity({ label, used, total, unit }: { label: string; used: number; total: number; unit: string }) {
  const pct = total ? Math.round((used / total) * 100) : 0;
  return (
    <Box data-testid={`capacity-${label}`}>
      <Flex justify="space-between" fontSize="sm">
        <Text>{label}</Text>
        <Text color="fg.muted">
          {used} / {total} {unit} used · {total - used} free
        </Text>
      </Flex>
      <Progress.Root value={pct} size="sm" colorPalette={pct > 90 ? "red" : pct > 70 ? "orange" : "green"}>
        <Progress.Track>
          <Progress.Range />
        </Progress.Track>
      </Progress.Root>
    </Box>
  );
}

function Fleet() {
  const layout = usePoll((signal) => getApi<Layout>("hosts", undefined, signal));
  const hosts: Host[] = layout.data?.hosts ?? [];
  const byGroup = new Map<string, Host[]>();
  for (const h of hosts) byGroup.set(h.group, [...(byGroup.get(h.group) ?? []), h]);
  const vms = hosts.flatMap((h) => h.vms);
  const reachable = hosts.filter((h) => h.hypervisor === "ok");
  const sum = (f: (h: Host) => number | null) => reachable.reduce((n, h) => n + (f(h) ?? 0), 0);
  return (
    <>
      <Section title={<AppLink to={pageLink(ROUTES.layout)}>Hosts by group</AppLink>} testId="dash-hosts" updatedAt={layout.updatedAt}>
        <ErrorAlert error={layout.error} what="the fleet" />
        <Stack gap={3}>
          {[...byGroup.entries()].map(([group, members]) => (
            <Box key={group} data-group={group}>
              <Text fontWeight="semibold" fontSize="sm">
                {group}{" "}
                <Text as="span" color="fg.muted">
                  ({members.length} {members.length === 1 ? "host" : "hosts"})
                </Text>
              </Text>
              <Flex gap={2} wrap="wrap" mt={1}>
                {members.map((h) => (
                  <HStack key={h.name} gap={1} borderWidth="1px" borderColor="border" borderRadius="sm" px={2} py={1} data-host={h.name}>
                    <Text fontSize="sm">{h.name}</Text>
                    <StateBadge state={h.status ?? "unknown"} />
                    <Text fontSize="xs" color="fg.muted">
                      {h.hypervisor === "ok" ? `${h.vm_count ?? 0} VMs` : "unreachable"}
                    </Text>
                  </HStack>
                ))}
              </Flex>
            </Box>
          ))}
          {layout.data && hosts.length === 0 ? <Text color="fg.muted">no hosts in the inventory</Text> : null}
        </Stack>
      </Section>
      <Section title={<AppLink to={pageLink(ROUTES.layout)}>VMs and capacity</AppLink>} testId="dash-vms" updatedAt={layout.updatedAt}>
        <ErrorAlert error={layout.error} what="the fleet" />
        <Flex gap={2} wrap="wrap" mb={3} data-testid="vm-states">
          {countBy(vms, (v) => v.state).map(([state, n]) => (
            <StateBadge key={state} state={state} label={`${state} ${n}`} />
          ))}
          {layout.data && vms.length === 0 ? <Text color="fg.muted">no VMs</Text> : null}
        </Flex>
        <Stack gap={2}>
          <Capacity label="vCPU" used={sum((h) => h.used_cpus)} total={sum((h) => h.cpus)} unit="vCPU" />
          <Capacity
            label="memory"
            used={Math.round(sum((h) => h.used_memory_mib) / 1024)}
            total={Math.round(sum((h) => h.memory_mib) / 1024)}
            unit="GiB"
          />
        </Stack>
      </Section>
    </>
  );
}

function Jobs() {
  const status = useStatus();
  const jobs = usePoll((signal) => getApi<JobList>("jobs", { limit: 1000 }, signal));
  const counts = new Map(countBy(jobs.data?.jobs ?? [], (j) => j.state));
  return (
    <Section title={<AppLink to={jobsLink()}>{jobsHeading(status, (jobs.data?.jobs ?? []).map((j) => j.owner))}</AppLink>} testId="dash-jobs" updatedAt={jobs.updatedAt}>
      <ErrorAlert error={jobs.error} what="jobs" />
      <Flex gap={4} wrap="wrap">
        {JOB_STATES.map((state) => (
          <Box key={state} data-job-state={state} textAlign="center" minW="5rem">
            <Text fontSize="2xl" fontWeight="semibold">
              {counts.get(state) ?? 0}
            </Text>
            <AppLink to={jobsLink(state)}>
              <StateBadge state={state} />
            </AppLink>
          </Box>
        ))}
      </Flex>
    </Section>
  );
}

function IntakeQueues() {
  const intakes = usePoll((signal) => getApi<IntakeList>("intakes", { limit: 0 }, signal));
  return (
    <Section title={<AppLink to={pageLink(ROUTES.intake)}>S3 intake</AppLink>} testId="dash-intake" updatedAt={intakes.updatedAt}>
      <ErrorAlert error={intakes.error} what="the S3 intakes" />
      <DataTable
        rows={intakes.data?.intakes ?? []}
        rowKey={(i) => i.name}
        empty={intakes.data ? "no S3 intake you may read" : "loading…"}
        columns={[
          { key: "bucket", header: "bucket", render: (i) => <AppLink to={pageLink(ROUTES.intake)}>{i.bucket}</AppLink> },
          { key: "live", header: "", render: (i) => <StateBadge state={i.paused ? "paused" : "live"} /> },
          { key: "waiting", header: "waiting", align: "end", render: (i) => String(queueOf(i.counts).waiting) },
          { key: "active", header: "in progress", align: "end", render: (i) => String(queueOf(i.counts).active) },
          { key: "failed", header: "failed", align: "end", render: (i) => String(i.counts.FAILED ?? 0) },
        ]}
      />
    </Section>
  );
}

function PlannerNext() {
  const plan = usePoll((signal) => getApi<Plan>("power/plan", undefined, signal), [], 30_000);
  const actions = plan.data?.actions ?? [];
  return (
    <Section title={<AppLink to={pageLink(ROUTES.power)}>Power planner: next action</AppLink>} testId="dash-plan" updatedAt={plan.updatedAt}>
      <ErrorAlert error={plan.error} what="the power plan" />
      {plan.data ? (
        actions.length ? (
          <Stack gap={1}>
            {actions.slice(0, 5).map((a) => (
              <Text key={`${a.node}-${a.action}`} fontSize="sm" data-plan-node={a.node}>
                <StateBadge state={a.action} label={`power ${a.action}`} /> {a.node}: {a.reason}
              </Text>
            ))}
          </Stack>
        ) : (
          <Text fontSize="sm" color="fg.muted" data-testid="plan-none">
            no action planned (dry run at {formatUtc(plan.data.now)})
          </Text>
        )
      ) : null}
    </Section>
  );
}

interface Failure {
  key: string;
  what: string;
  link: string;
  state: string;
  at: string | null;
  message: string;
}

function RecentFailures() {
  const jobs = usePoll((signal) => getApi<JobList>("jobs", { state: "FAILED", limit: 5 }, signal));
  const runs = usePoll((signal) =>
    getAirflow<{ dag_runs: DagRun[] }>("dags/~/dagRuns", { state: "failed", order_by: "-run_after", limit: 5 }, signal),
  );
  const rows: Failure[] = [
    ...(jobs.data?.jobs ?? []).map((j) => ({
      key: `job:${j.job_id}`,
      what: `job ${j.job_id}`,
      link: jobLink(j.job_id),
      state: j.state,
      at: j.submitted_at,
      message: j.message ?? "",
    })),
    ...(runs.data?.dag_runs ?? []).map((r) => ({
      key: `run:${r.dag_id}:${r.dag_run_id}`,
      what: `${r.dag_id} / ${r.dag_run_id}`,
      link: dagRunLink(r.dag_id, r.dag_run_id),
      state: r.state,
      at: r.end_date ?? r.run_after,
      message: "",
    })),
  ];
  return (
    <Section title="Recent failures" testId="dash-failures" updatedAt={jobs.updatedAt ?? runs.updatedAt}>
      <ErrorAlert error={jobs.error} what="jobs" />
      <ErrorAlert error={runs.error} what="DAG runs" />
      <DataTable
        rows={rows}
        rowKey={(f) => f.key}
        empty={jobs.data || runs.data ? "no failures" : "loading…"}
        columns={[
          { key: "what", header: "what", render: (f) => <AppLink to={f.link}>{f.what}</AppLink> },
          { key: "state", header: "state", render: (f) => <StateBadge state={f.state} /> },
          { key: "at", header: "when", render: (f) => <span title={formatUtc(f.at)}>{formatAgo(f.at)}</span> },
          { key: "message", header: "message", render: (f) => <Text lineClamp={2}>{f.message}</Text> },
        ]}
      />
    </Section>
  );
}

export function Dashboard() {
  const status = useStatus();
  return (
    <>
      <PageHeader title="rackflow">
        <Text fontSize="sm" color="fg.muted" data-testid="who">
          {status ? `rackflow ${status.version} — signed in as ${status.user}${status.admin ? " (admin)" : ""}` : ""}
        </Text>
      </PageHeader>
      <SimpleGrid columns={{ base: 1, lg: 2 }} gap={4}>
        <Fleet />
        <Jobs />
        <IntakeQueues />
        <PlannerNext />
        <Box gridColumn={{ lg: "span 2" }}>
          <RecentFailures />
        </Box>
      </SimpleGrid>
    </>
  );
}
