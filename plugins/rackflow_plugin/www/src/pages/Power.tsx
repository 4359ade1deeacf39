// Power: a timeline per node (status bands over the last hours or days, the mode beneath, the
// reservations its group may serve as bars, and the planner's On and Off threshold windows drawn ahead
// of now), manual power on/off with the refusal's reason and the VMs that block it, migrate-then-off,
// the planner's next actions and the reservations. Users who may not act see no buttons or forms.
import { Box, Button, Checkbox, Flex, HStack, Input, NativeSelect, Stack, Text } from "@chakra-ui/react";
import { useMemo, useRef, useState, type FormEvent } from "react";

import { ApiError, getApi, postApi, request, apiUrl, seg } from "../shared/api";
import { formatDuration, formatUtc, parseUtc } from "../shared/dates";
import { usePoll } from "../shared/poll";
import { stateColor } from "../shared/states";
import { useStatus } from "../shared/status";
import { DataTable, ErrorAlert, Notice, PageHeader, Section, StateBadge } from "../shared/ui";
import { timeScale, timeTicks, token } from "../viz/scale";
import { bandTitle, packRows, reservationsFor, WINDOWS, type Reservation, type Timeline, type TimelineNode } from "../viz/timeline";

interface PlanAction {
  node: string;
  action: string;
  reason: string;
}

interface Plan {
  now: string;
  off_threshold_s: number;
  on_threshold_s: number;
  actions: PlanAction[];
  skipped: PlanAction[];
  notes: string[];
  unplaced_reservations: string[];
}

const POWER_POLL_MS = 10_000;
const W = 1200;
const LABEL_W = 170;
const AXIS_H = 22;
const RES_ROW_H = 16;
const NODE_ROW_H = 34;

const fmt = (v: string) => formatUtc(v, false);

function TimelinePlot({ data }: { data: Timeline }) {
  const packed = packRows(data.reservations);
  const resRows = Math.max(1, ...packed.map((p) => p.row + 1));
  const top = AXIS_H + resRows * RES_ROW_H + 8;
  const height = top + data.nodes.length * NODE_ROW_H + 6;
  const s = timeScale(data.since, data.until, LABEL_W, W - 8);
  const now = s.x(data.now);
  const onEnd = s.x(data.on_window_end);
  const offEnd = s.x(data.off_window_end);
  const ticks = timeTicks(s, 10);
  return (
    <svg viewBox={`0 0 ${W} ${height}`} width="100%" role="img" aria-label="power timeline" data-testid="timeline" style={{ fontSize: 11 }}>
      {/* the windows ahead of now: power-off control looks to the Off end, power-on control to the On end */}
      <rect x={now} y={AXIS_H} width={Math.max(0, offEnd - now)} height={height - AXIS_H} fill={token("orange.subtle")} data-testid="off-window">
        <title>{`Off window: power-off control weighs reservations until ${fmt(data.off_window_end)} (OffThreshold ${formatDuration(data.off_threshold_s)})`}</title>
      </rect>
      <rect x={now} y={AXIS_H} width={Math.max(0, onEnd - now)} height={height - AXIS_H} fill={token("blue.subtle")} data-testid="on-window">
        <title>{`On window: nodes are powered on for reservations starting by ${fmt(data.on_window_end)} (OnThreshold ${formatDuration(data.on_threshold_s)})`}</title>
      </rect>
      <text x={onEnd - 3} y={height - 6} textAnchor="end" fill={token("blue.fg")}>
        On {data.on_threshold_s / 60} min
      </text>
      <text x={offEnd - 3} y={height - 6} textAnchor="end" fill={token("orange.fg")}>
        Off {data.off_threshold_s / 60} min
      </text>
      {ticks.map((t) => (
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
      <text x={4} y={AXIS_H + 12} fill={token("fg.muted")}>
        reservations
      </text>
      {packed.map(({ item, row }) => {
        const x0 = s.x(item.start);
        const x1 = s.x(item.end);
        return (
          <g key={item.id} data-reservation={item.name}>
            <rect x={x0} y={AXIS_H + row * RES_ROW_H + 2} width={Math.max(2, x1 - x0)} height={RES_ROW_H - 4} rx={3} fill={token("purple.solid")}>
              <title>{`${item.key} ${item.name}: ${fmt(item.start)} → ${fmt(item.end)}, ${item.vm_count} × ${item.vcpus_per_vm} vCPU / ${item.memory_mib_per_vm} MiB, group ${item.group ?? "any"}, by ${item.created_by}`}</title>
            </rect>
            <text x={x0 + 3} y={AXIS_H + row * RES_ROW_H + 11} fill={token("purple.contrast")} style={{ pointerEvents: "none" }}>
              {x1 - x0 > 60 ? item.name : ""}
            </text>
          </g>
        );
      })}
      {data.nodes.map((node, i) => (
        <NodeRow key={node.name} node={node} y={top + i * NODE_ROW_H} scale={s} reservations={reservationsFor(node, data.reservations)} />
      ))}
      <line x1={now} x2={now} y1={AXIS_H - 4} y2={height} stroke={token("fg")} strokeWidth={1.5} data-testid="now" />
      <text x={now + 3} y={AXIS_H + 11} fill={token("fg")}>
        now
      </text>
    </svg>
  );
}

function NodeRow({
  node,
  y,
  scale,
  reservations,
}: {
  node: TimelineNode;
  y: number;
  scale: ReturnType<typeof timeScale>;
  reservations: Reservation[];
}) {
  return (
    <g data-node={node.name} className="node-row">
      <text x={4} y={y + 13} fill={token("fg")} fontWeight={600}>
        {node.name}
      </text>
      <text x={4} y={y + 26} fill={token("fg.muted")}>
        {node.group} · {node.status ?? "unknown"}
      </text>
      {node.bands.map((b) => {
        const x0 = scale.x(b.start);
        const x1 = scale.x(b.end);
        const status = b.field === "status";
        return (
          <rect
            key={`${b.field}-${b.start}`}
            x={x0}
            y={status ? y + 2 : y + 20}
            width={Math.max(1, x1 - x0)}
            height={status ? 16 : 5}
            fill={b.value === null ? token("bg.emphasized") : token(`${stateColor(b.value)}.${status ? "solid" : "emphasized"}`)}
            data-band={b.field}
            data-value={b.value ?? "unknown"}
          >
            <title>{bandTitle(b, fmt)}</title>
          </rect>
        );
      })}
      {reservations.map((r) => {
        const x0 = scale.x(r.start);
        const x1 = scale.x(r.end);
        return x1 > x0 ? (
          <rect key={r.id} x={x0} y={y + 27} width={x1 - x0} height={3} fill={token("purple.solid")} opacity={0.8}>
            <title>{`${r.name}: ${fmt(r.start)} → ${fmt(r.end)}`}</title>
          </rect>
        ) : null;
      })}
    </g>
  );
}

function Legend() {
  const items: [string, string][] = [
    ["on", "green.solid"],
    ["booting / stopping", "yellow.solid"],
    ["off / stopped", "gray.solid"],
    ["error-stopped", "red.solid"],
    ["unknown", "bg.emphasized"],
    ["reservation", "purple.solid"],
    ["On window", "blue.subtle"],
    ["Off window", "orange.subtle"],
  ];
  return (
    <HStack gap={3} wrap="wrap" fontSize="xs" data-testid="timeline-legend">
      {items.map(([label, color]) => (
        <HStack key={label} gap={1}>
          <Box width="10px" height="10px" borderRadius="2px" style={{ background: token(color) }} />
          <Text>{label}</Text>
        </HStack>
      ))}
      <Text color="fg.muted">thick band: status · thin band: mode</Text>
    </HStack>
  );
}

interface Outcome {
  node: string;
  ok: boolean;
  text: string;
  vms: string[];
}

function NodeActions({ data, onDone }: { data: Timeline; onDone: () => void }) {
  const [migrate, setMigrate] = useState(false);
  const [busy, setBusy] = useState<string | null>(null);
  const [outcome, setOutcome] = useState<Outcome | null>(null);
  const act = async (node: string, action: "on" | "off") => {
    setBusy(`${node}/${action}`);
    try {
      const r = await postApi<{ decision: string; run_id: string; migrations: Record<string, string> }>(
        `power/nodes/${seg(node)}/${action}`,
        { migrate },
      );
      const moved = Object.entries(r.migrations).map(([vm, to]) => `${vm} → ${to}`);
      setOutcome({ node, ok: true, text: `power ${action} ${node}: ${r.decision} (run ${r.run_id})${moved.length ? `; migrating ${moved.join(", ")}` : ""}`, vms: [] });
    } catch (exc) {
      const detail = exc instanceof ApiError ? (exc.detail as { message?: string; vms?: string[] } | null) : null;
      const message = detail && typeof detail === "object" && detail.message ? detail.message : exc instanceof Error ? exc.message : String(exc);
      setOutcome({ node, ok: false, text: `power ${action} ${node} refused: ${message}`, vms: detail?.vms ?? [] });
    } finally {
      setBusy(null);
      onDone();
    }
  };
  return (
    <Stack gap={2}>
      {data.can_act ? (
        <Checkbox.Root checked={migrate} onCheckedChange={(e) => setMigrate(!!e.checked)} size="sm" data-testid="migrate">
          <Checkbox.HiddenInput />
          <Checkbox.Control />
          <Checkbox.Label>migrate running VMs within the group before power off</Checkbox.Label>
        </Checkbox.Root>
      ) : null}
      {outcome ? (
        <Box data-testid="power-outcome" data-ok={outcome.ok ? "yes" : "no"}>
          <Notice kind={outcome.ok ? "success" : "error"}>
            {outcome.text}
            {outcome.vms.length ? (
              <Text as="span" display="block" data-testid="blocking-vms">
                blocking VMs:{" "}
                {outcome.vms.map((vm) => (
                  <Text as="span" key={vm} fontFamily="mono" mr={2} data-vm={vm}>
                    {vm}
                  </Text>
                ))}
              </Text>
            ) : null}
          </Notice>
        </Box>
      ) : null}
      <DataTable
        testId="nodes"
        rows={data.nodes}
        rowKey={(n) => n.name}
        rowProps={(n) => ({ "data-node": n.name })}
        columns={[
          { key: "name", header: "node" },
          { key: "group", header: "group" },
          { key: "status", header: "status", render: (n) => <StateBadge state={n.status ?? "unknown"} /> },
          { key: "mode", header: "mode", render: (n) => <StateBadge state={n.mode} /> },
          {
            key: "since",
            header: "status since",
            render: (n) => {
              const last = [...n.bands].reverse().find((b) => b.field === "status");
              return last && last.actor ? `${fmt(last.start)} (${last.actor})` : "—";
            },
          },
          { key: "last_error", header: "last error", render: (n) => n.last_error ?? "" },
          ...(data.can_act
            ? [
                {
                  key: "act",
                  header: "power",
                  render: (n: TimelineNode) => (
                    <HStack gap={1}>
                      <Button size="xs" variant="outline" colorPalette="green" data-action="on" loading={busy === `${n.name}/on`} onClick={() => act(n.name, "on")}>
                        on
                      </Button>
                      <Button size="xs" variant="outline" colorPalette="red" data-action="off" loading={busy === `${n.name}/off`} onClick={() => act(n.name, "off")}>
                        {migrate ? "migrate + off" : "off"}
                      </Button>
                    </HStack>
                  ),
                },
              ]
            : []),
        ]}
      />
    </Stack>
  );
}

function PlanSection() {
  const plan = usePoll((signal) => getApi<Plan>("power/plan", undefined, signal), [], POWER_POLL_MS * 3);
  const p = plan.data;
  const rows = p ? [...p.actions, ...p.skipped] : [];
  return (
    <Section title="Planner's next actions (dry run)" testId="plan">
      <ErrorAlert error={plan.error} what="the planner's plan" />
      {p ? (
        <Text fontSize="sm" color="fg.muted" mb={2} data-testid="thresholds">
          OffThreshold {p.off_threshold_s / 60} min, OnThreshold {p.on_threshold_s / 60} min · planned at {formatUtc(p.now)}
        </Text>
      ) : null}
      <DataTable
        rows={rows}
        rowKey={(a) => `${a.node}-${a.action}`}
        rowProps={(a) => ({ "data-node": a.node, "data-action": a.action })}
        empty="no action"
        columns={[
          { key: "node", header: "node" },
          { key: "action", header: "action", render: (a) => <StateBadge state={a.action === "skip" ? "skipped" : a.action} label={a.action} /> },
          { key: "reason", header: "reason" },
        ]}
      />
      {p?.notes.length ? (
        <Stack gap={0} mt={2} fontSize="xs" color="fg.muted" data-testid="notes">
          {p.notes.map((n) => (
            <Text key={n}>{n}</Text>
          ))}
        </Stack>
      ) : null}
    </Section>
  );
}

/** `YYYY-MM-DDTHH:MM` typed as UTC -> ISO with Z (the page works in UTC). */
const fromUtcInput = (v: string): string => `${v}:00Z`;

function Reservations({ data, onChange }: { data: Timeline; onChange: () => void }) {
  const status = useStatus();
  const list = usePoll((signal) => getApi<Reservation[]>("power/reservations", undefined, signal), [], POWER_POLL_MS);
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const form = useRef<HTMLFormElement>(null);
  const reserve = async (ev: FormEvent<HTMLFormElement>) => {
    ev.preventDefault();
    const f = new FormData(ev.currentTarget);
    const body = {
      name: String(f.get("name") ?? ""),
      start: fromUtcInput(String(f.get("start"))),
      end: fromUtcInput(String(f.get("end"))),
      vm_count: Number(f.get("vm_count")),
      vcpus_per_vm: Number(f.get("vcpus_per_vm")),
      memory_mib_per_vm: Number(f.get("memory_mib_per_vm")),
      group: String(f.get("group") ?? "") || null,
    };
    try {
      const made = await postApi<Reservation>("power/reservations", body);
      setMessage({ ok: true, text: `Reserved ${made.key} (${made.name}).` });
      form.current?.reset();
    } catch (exc) {
      setMessage({ ok: false, text: `Reservation refused: ${exc instanceof Error ? exc.message : String(exc)}` });
    }
    list.refresh();
    onChange();
  };
  const cancel = async (r: Reservation) => {
    try {
      await request(apiUrl(`power/reservations/${r.id}`), { method: "DELETE" });
      setMessage({ ok: true, text: `Reservation ${r.key} canceled.` });
    } catch (exc) {
      setMessage({ ok: false, text: `Cancel refused: ${exc instanceof Error ? exc.message : String(exc)}` });
    }
    list.refresh();
    onChange();
  };
  const mayCancel = (r: Reservation) => data.can_act && (status?.admin || status?.user === r.created_by);
  const groups = useMemo(() => [...new Set(data.nodes.map((n) => n.group))].sort(), [data.nodes]);
  const inAnHour = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 3_600_000).toISOString().slice(0, 16);
  return (
    <Section title="Reservations" testId="reservations">
      <ErrorAlert error={list.error} what="the reservations" />
      {message ? (
        <Box data-testid="reservation-message" data-ok={message.ok ? "yes" : "no"}>
          <Notice kind={message.ok ? "success" : "error"}>{message.text}</Notice>
        </Box>
      ) : null}
      <DataTable
        rows={list.data ?? []}
        rowKey={(r) => String(r.id)}
        rowProps={(r) => ({ "data-reservation": r.name })}
        empty="no active reservation"
        columns={[
          { key: "key", header: "id" },
          { key: "name", header: "name" },
          { key: "start", header: "start", render: (r) => formatUtc(r.start, false) },
          { key: "end", header: "end", render: (r) => formatUtc(r.end, false) },
          { key: "vms", header: "VMs", render: (r) => `${r.vm_count} × ${r.vcpus_per_vm} vCPU / ${r.memory_mib_per_vm} MiB` },
          { key: "group", header: "group", render: (r) => r.group ?? "any" },
          { key: "created_by", header: "by" },
          {
            key: "act",
            header: "",
            render: (r) =>
              mayCancel(r) ? (
                <Button size="xs" variant="outline" data-cancel={r.id} onClick={() => cancel(r)}>
                  cancel
                </Button>
              ) : null,
          },
        ]}
      />
      {data.can_act ? (
        <form ref={form} onSubmit={reserve} data-testid="reserve">
          <Text fontSize="sm" mt={3} mb={1} color="fg.muted">
            Reserve a virtual cluster (times in UTC; the planner powers nodes on for it OnThreshold ahead):
          </Text>
          <Flex gap={2} wrap="wrap" align="end">
            <Input size="sm" width="10rem" name="name" placeholder="name" required />
            <Stack gap={0}>
              <Text fontSize="xs" color="fg.muted">start (UTC)</Text>
              <Input size="sm" width="13rem" name="start" type="datetime-local" defaultValue={inAnHour} required />
            </Stack>
            <Stack gap={0}>
              <Text fontSize="xs" color="fg.muted">end (UTC)</Text>
              <Input size="sm" width="13rem" name="end" type="datetime-local" required />
            </Stack>
            <Stack gap={0}>
              <Text fontSize="xs" color="fg.muted">VMs</Text>
              <Input size="sm" width="5rem" name="vm_count" type="number" min={1} defaultValue={2} />
            </Stack>
            <Stack gap={0}>
              <Text fontSize="xs" color="fg.muted">vCPU each</Text>
              <Input size="sm" width="5rem" name="vcpus_per_vm" type="number" min={1} defaultValue={2} />
            </Stack>
            <Stack gap={0}>
              <Text fontSize="xs" color="fg.muted">MiB each</Text>
              <Input size="sm" width="6rem" name="memory_mib_per_vm" type="number" min={1} defaultValue={1024} />
            </Stack>
            <NativeSelect.Root size="sm" width="9rem">
              <NativeSelect.Field name="group" aria-label="group" defaultValue="">
                <option value="">any group</option>
                {groups.map((g) => (
                  <option key={g} value={g}>
                    {g}
                  </option>
                ))}
              </NativeSelect.Field>
              <NativeSelect.Indicator />
            </NativeSelect.Root>
            <Button type="submit" size="sm" colorPalette="blue">
              Reserve
            </Button>
          </Flex>
        </form>
      ) : null}
    </Section>
  );
}

export function Power() {
  const [hours, setHours] = useState(6);
  // A fifth of the plot lies ahead of now (at least the Off window: the server widens it).
  const timeline = usePoll((signal) => getApi<Timeline>("power/timeline", { hours, ahead_hours: hours / 4 }, signal), [hours], POWER_POLL_MS);
  const data = timeline.data;
  const span = data ? ((parseUtc(data.until)?.getTime() ?? 0) - (parseUtc(data.since)?.getTime() ?? 0)) / 3_600_000 : 0;
  return (
    <Box data-testid="power-page">
      <PageHeader title="Power" updatedAt={timeline.updatedAt} loading={timeline.loading}>
        <NativeSelect.Root size="sm" width="10rem">
          <NativeSelect.Field aria-label="window" name="window" value={String(hours)} onChange={(e) => setHours(Number(e.target.value))}>
            {WINDOWS.map((w) => (
              <option key={w.hours} value={w.hours}>
                last {w.label}
              </option>
            ))}
          </NativeSelect.Field>
          <NativeSelect.Indicator />
        </NativeSelect.Root>
      </PageHeader>
      <ErrorAlert error={timeline.error} what="the power timeline" />
      {data ? (
        <Stack gap={4}>
          <Section title={`Timeline · ${Math.round(span)} h (UTC)`} testId="timeline-section">
            <Legend />
            <TimelinePlot data={data} />
          </Section>
          <Section title="Nodes" testId="nodes-section">
            <NodeActions data={data} onDone={timeline.refresh} />
          </Section>
          <PlanSection />
          <Reservations data={data} onChange={timeline.refresh} />
        </Stack>
      ) : null}
    </Box>
  );
}
