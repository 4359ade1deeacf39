// The server layout, drawn: each network group (rack) a column of host boxes; in each box the host's
// power, vCPU and memory bars and its VMs as tiles coloured by state. Search and filters narrow what is
// drawn; a host's detail lists its VMs' addresses and disks; the launch form previews the names a
// launch will create (the server's own naming rule, rackflow/api/vm-names) and follows the run.
//
// Tiles are plain elements with the theme's colour tokens (not one Chakra component each): the page
// draws 2,000 VMs in well under a second (bench/bench_layout_page.py).
import { Box, Button, CloseButton, Drawer, Flex, Grid, HStack, Input, NativeSelect, Portal, Stack, Text } from "@chakra-ui/react";
import { memo, useEffect, useMemo, useState, type FormEvent } from "react";

import { ApiError, getAirflow, getApi, request, airflowUrl, seg } from "../shared/api";
import { formatAgo } from "../shared/dates";
import { usePoll } from "../shared/poll";
import { stateColor } from "../shared/states";
import { DataTable, ErrorAlert, Notice, PageHeader, Section, StateBadge } from "../shared/ui";
import { filtering, formatMib, groupColumns, NO_FILTER, percent, stateCounts, type LayoutFilter, type ShownHost } from "../viz/layoutModel";
import { token } from "../viz/scale";
import type { Host, Vm } from "../shared/types";

/** What rackflow/api/hosts answers (the shared Host/Vm shapes plus the page's extra fields). */
export interface LayoutAnswer {
  generated_at: string;
  took_ms: number;
  summary: { hosts: number; unreachable: number; vms: number; running_vms: number };
  groups: string[];
  launch_dag_id: string;
  can_launch: boolean;
  hosts: (Host & { status_since: string | null; last_error: string | null })[];
}

interface VmDetail extends Vm {
  uuid: string | null;
  disks: string[] | null;
  volumes: string[] | null;
  launch: string | null;
}

const LAYOUT_POLL_MS = 10_000;

function Bar({ label, used, total, text }: { label: string; used: number | null; total: number; text: string }) {
  const pct = percent(used, total);
  const palette = pct > 90 ? "red" : pct > 70 ? "orange" : "green";
  return (
    <div className="rf-bar" data-bar={label} title={`${label}: ${text}`}>
      <span className="rf-bar-label">{label}</span>
      <span className="rf-bar-track" style={{ background: token("bg.emphasized") }}>
        <span className="rf-bar-fill" style={{ width: `${pct}%`, background: token(`${palette}.solid`) }} />
      </span>
      <span className="rf-bar-text">{text}</span>
    </div>
  );
}

/** A VM as a tile in its state's colour; with few VMs on the page the tile carries the name. */
const Tile = ({ vm, selected, named, onPick }: { vm: Vm; selected: boolean; named: boolean; onPick: (name: string) => void }) => (
  <button
    type="button"
    className={`rf-tile${named ? " rf-named" : ""}${selected ? " rf-selected" : ""}`}
    data-vm={vm.name}
    data-state={vm.state}
    title={`${vm.name} · ${vm.state} · ${vm.vcpus} vCPU · ${formatMib(vm.memory_mib)}${vm.addresses.length ? ` · ${vm.addresses.join(", ")}` : ""}`}
    style={{ background: token(`${stateColor(vm.state)}.solid`), color: token(`${stateColor(vm.state)}.contrast`) }}
    onClick={() => onPick(vm.name)}
  >
    {named ? vm.name : null}
  </button>
);

/** Up to this many VMs drawn, tiles are labelled with the VM name; beyond, they are small squares. */
const NAMED_TILES_UP_TO = 300;

const HostBox = memo(function HostBox({
  shown,
  picked,
  named,
  onPick,
  onDetail,
}: {
  shown: ShownHost;
  picked: string | null;
  named: boolean;
  onPick: (name: string) => void;
  onDetail: (host: string) => void;
}) {
  const { host, vms } = shown;
  const up = host.hypervisor === "ok";
  return (
    <Box
      as="section"
      className="host"
      data-host={host.name}
      borderWidth="1px"
      borderColor={up ? "border" : "red.emphasized"}
      borderRadius="md"
      bg="bg.panel"
      p={2}
    >
      <Flex align="center" gap={2} wrap="wrap">
        <Button size="xs" variant="ghost" px={1} fontWeight="semibold" onClick={() => onDetail(host.name)} data-testid="host-detail">
          {host.name}
        </Button>
        <StateBadge state={host.status ?? "unknown"} label={`power ${host.status ?? "unknown"}`} />
        {host.mode && host.mode !== host.status ? <Text fontSize="xs" color="fg.muted">mode {host.mode}</Text> : null}
        <Box flex="1" />
        <Text fontSize="xs" color="fg.muted" data-testid="vm-count">
          {up ? `${host.vm_count ?? 0} VMs` : "unreachable"}
        </Text>
      </Flex>
      {up ? (
        <>
          <Bar label="vCPU" used={host.used_cpus} total={host.cpus} text={`${host.used_cpus}/${host.cpus}`} />
          <Bar
            label="mem"
            used={host.used_memory_mib}
            total={host.memory_mib}
            text={`${formatMib(host.used_memory_mib)}/${formatMib(host.memory_mib)}`}
          />
          <div className="rf-tiles">
            {vms.map((vm) => (
              <Tile key={vm.name} vm={vm} selected={picked === vm.name} named={named} onPick={onPick} />
            ))}
          </div>
        </>
      ) : (
        <Text fontSize="xs" color="fg.error" data-testid="hypervisor-error">
          {host.hypervisor_error}
        </Text>
      )}
    </Box>
  );
});

function Select({
  label,
  value,
  options,
  onChange,
  any = "any",
}: {
  label: string;
  value: string;
  options: string[];
  onChange: (v: string) => void;
  any?: string | null;
}) {
  return (
    <NativeSelect.Root size="sm" width="11rem">
      <NativeSelect.Field aria-label={label} name={label} value={value} onChange={(e) => onChange(e.target.value)}>
        {any !== null ? <option value="">{`${label}: ${any}`}</option> : null}
        {options.map((o) => (
          <option key={o} value={o}>
            {o}
          </option>
        ))}
      </NativeSelect.Field>
      <NativeSelect.Indicator />
    </NativeSelect.Root>
  );
}

function Legend({ counts }: { counts: Record<string, number> }) {
  return (
    <HStack gap={3} wrap="wrap" data-testid="legend">
      {Object.entries(counts)
        .sort()
        .map(([state, n]) => (
          <HStack key={state} gap={1}>
            <span className="rf-swatch" style={{ background: token(`${stateColor(state)}.solid`) }} />
            <Text fontSize="xs">
              {state} {n}
            </Text>
          </HStack>
        ))}
    </HStack>
  );
}

function HostDetail({ name, onClose }: { name: string | null; onClose: () => void }) {
  const detail = usePoll(
    (signal) => (name ? getApi<LayoutAnswer["hosts"][number] & { vms: VmDetail[] }>(`hosts/${seg(name)}`, undefined, signal) : Promise.resolve(undefined)),
    [name],
    LAYOUT_POLL_MS,
  );
  const host = detail.data;
  return (
    <Drawer.Root open={name !== null} onOpenChange={(e) => (e.open ? null : onClose())} size="xl">
      <Portal>
        <Drawer.Backdrop />
        <Drawer.Positioner>
          <Drawer.Content data-testid="host-drawer">
            <Drawer.Header>
              <Drawer.Title>{name}</Drawer.Title>
            </Drawer.Header>
            <Drawer.Body>
              <ErrorAlert error={detail.error} what={`host ${name}`} />
              {host && host.name === name ? (
                <Stack gap={3}>
                  <Text fontSize="sm">
                    group {host.group}
                    {host.rack ? ` · rack ${host.rack}` : ""} · {host.cpus} vCPU · {formatMib(host.memory_mib)} · power{" "}
                    <StateBadge state={host.status ?? "unknown"} /> mode {host.mode ?? "?"}
                    {host.status_since ? ` · since ${formatAgo(host.status_since)}` : ""}
                  </Text>
                  {host.last_error ? <Notice kind="error">{host.last_error}</Notice> : null}
                  <DataTable
                    testId="host-vms"
                    rows={host.vms}
                    rowKey={(vm) => vm.name}
                    rowProps={(vm) => ({ "data-vm": vm.name })}
                    empty="no VMs on this host"
                    columns={[
                      { key: "name", header: "VM" },
                      { key: "state", header: "state", render: (vm) => <StateBadge state={vm.state} /> },
                      { key: "size", header: "size", render: (vm) => `${vm.vcpus} vCPU · ${formatMib(vm.memory_mib)}` },
                      { key: "image", header: "image", render: (vm) => vm.image ?? "—" },
                      { key: "addresses", header: "addresses", render: (vm) => vm.addresses.join(", ") || "—" },
                      { key: "disks", header: "disks", render: (vm) => (vm.disks ?? []).join(", ") || "—" },
                      { key: "volumes", header: "volumes", render: (vm) => (vm.volumes ?? []).join(", ") || "—" },
                    ]}
                  />
                </Stack>
              ) : null}
            </Drawer.Body>
            <Drawer.CloseTrigger asChild>
              <CloseButton size="sm" />
            </Drawer.CloseTrigger>
          </Drawer.Content>
        </Drawer.Positioner>
      </Portal>
    </Drawer.Root>
  );
}

interface LaunchRun {
  runId: string;
  target: string;
  names: string[];
  state: string;
  error?: string;
}

interface LaunchFields {
  /** Launch on one host, or over a network group (the placement policy picks its hosts). */
  over: "host" | "group";
  target: string;
  image: string;
  count: string;
  pattern: string;
  start: string;
  vcpus: string;
  memory_mib: string;
  network: string;
}

/** The names a launch would create, as the server previews them (debounced while typing). */
function useNamePreview(f: LaunchFields): { names: string[]; error: string | null } {
  const [out, setOut] = useState<{ names: string[]; error: string | null }>({ names: [], error: null });
  useEffect(() => {
    if (!f.target || !f.pattern || !f.count) {
      setOut({ names: [], error: null });
      return;
    }
    const controller = new AbortController();
    const timer = setTimeout(() => {
      getApi<{ names: string[] }>(
        "vm-names",
        { pattern: f.pattern, count: f.count, start: f.start, [f.over]: f.target },
        controller.signal,
      ).then(
        (r) => setOut({ names: r.names, error: null }),
        (exc: unknown) => {
          if (exc instanceof DOMException && exc.name === "AbortError") return;
          setOut({ names: [], error: exc instanceof Error ? exc.message : String(exc) });
        },
      );
    }, 250);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [f.over, f.target, f.pattern, f.count, f.start]);
  return out;
}

function LaunchForm({
  hosts,
  groups,
  dagId,
  onLaunched,
}: {
  hosts: string[];
  groups: string[];
  dagId: string;
  onLaunched: (run: LaunchRun) => void;
}) {
  const [f, setF] = useState<LaunchFields>({
    over: "host",
    target: hosts[0] ?? "",
    image: "debian-12.qcow2",
    count: "2",
    pattern: "hadoop-{seq:02d}",
    start: "",
    vcpus: "1",
    memory_mib: "512",
    network: "",
  });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const preview = useNamePreview(f);
  const set = (key: keyof LaunchFields) => (e: { target: { value: string } }) => setF({ ...f, [key]: e.target.value });

  const submit = async (ev: FormEvent) => {
    ev.preventDefault();
    setBusy(true);
    setError(null);
    const conf = {
      host: f.over === "host" ? f.target : null,
      group: f.over === "group" ? f.target : null,
      image: f.image,
      count: Number(f.count),
      pattern: f.pattern,
      start: f.start === "" ? null : Number(f.start),
      vcpus: Number(f.vcpus),
      memory_mib: Number(f.memory_mib),
      network: f.network || null,
    };
    try {
      const run = await request<{ dag_run_id: string; state: string }>(airflowUrl(`dags/${seg(dagId)}/dagRuns`), {
        method: "POST",
        body: { logical_date: null, conf },
      });
      onLaunched({ runId: run.dag_run_id, target: `${f.over} ${f.target}`, names: preview.names, state: run.state });
    } catch (exc) {
      setError(exc instanceof ApiError || exc instanceof Error ? exc.message : String(exc));
    } finally {
      setBusy(false);
    }
  };

  const field = (label: string, key: keyof LaunchFields, width = "7rem", type = "text") => (
    <Stack gap={0}>
      <Text fontSize="xs" color="fg.muted">
        {label}
      </Text>
      <Input size="sm" width={width} name={key} type={type} value={f[key]} onChange={set(key)} />
    </Stack>
  );

  return (
    <form onSubmit={submit} data-testid="launch-form">
      <Flex gap={3} wrap="wrap" align="end">
        <Stack gap={0}>
          <Text fontSize="xs" color="fg.muted">
            launch on
          </Text>
          <Select
            label="over"
            value={f.over}
            options={["host", "group"]}
            onChange={(v) => {
              const over = v === "group" ? "group" : "host";
              setF({ ...f, over, target: (over === "group" ? groups : hosts)[0] ?? "" });
            }}
            any={null}
          />
        </Stack>
        <Stack gap={0}>
          <Text fontSize="xs" color="fg.muted">
            {f.over === "group" ? "network group (placement picks hosts)" : "host"}
          </Text>
          <Select
            label={f.over}
            value={f.target}
            options={f.over === "group" ? groups : hosts}
            onChange={(v) => setF({ ...f, target: v })}
            any={null}
          />
        </Stack>
        {field("name pattern", "pattern", "12rem")}
        {field("count", "count", "5rem", "number")}
        {field("first number", "start", "6rem", "number")}
        {field("image", "image", "11rem")}
        {field("vCPUs", "vcpus", "5rem", "number")}
        {field("MiB", "memory_mib", "6rem", "number")}
        {field("network", "network", "8rem")}
        <Button type="submit" size="sm" colorPalette="blue" loading={busy} disabled={!!preview.error} data-testid="launch-submit">
          Launch
        </Button>
      </Flex>
      <Box mt={2} fontSize="sm" data-testid="name-preview">
        {preview.error ? (
          <Text color="fg.error" data-testid="preview-error">
            {preview.error}
          </Text>
        ) : preview.names.length ? (
          <Text>
            will create:{" "}
            {preview.names.map((n) => (
              <Text as="span" key={n} data-name={n} fontFamily="mono" mr={2}>
                {n}
              </Text>
            ))}
          </Text>
        ) : null}
      </Box>
      {error ? <Notice kind="error">Launch refused: {error}</Notice> : null}
    </form>
  );
}

function LaunchRuns({ runs, dagId, hosts }: { runs: LaunchRun[]; dagId: string; hosts: Host[] }) {
  const vmState = useMemo(() => {
    const m = new Map<string, string>();
    for (const h of hosts) for (const vm of h.vms) m.set(vm.name, vm.state);
    return m;
  }, [hosts]);
  if (!runs.length) return null;
  return (
    <Stack gap={1} mt={3} data-testid="launch-runs">
      {runs.map((r) => (
        <Flex key={r.runId} gap={2} align="center" wrap="wrap" className="launch-run" data-run={r.runId} data-run-state={r.state}>
          <Text fontSize="sm">
            {dagId} · {r.target} · run {r.runId}
          </Text>
          <StateBadge state={r.state} />
          {r.names.map((n) => {
            const s = r.state === "failed" ? "failed" : vmState.get(n) === "running" ? "running" : "pending";
            return <StateBadge key={n} state={s === "pending" ? "queued" : s} label={`${n} ${s}`} />;
          })}
        </Flex>
      ))}
    </Stack>
  );
}

export function ServerLayout() {
  const layout = usePoll((signal) => getApi<LayoutAnswer>("hosts", undefined, signal), [], LAYOUT_POLL_MS);
  const [filter, setFilter] = useState<LayoutFilter>(NO_FILTER);
  const [picked, setPicked] = useState<string | null>(null);
  const [detail, setDetail] = useState<string | null>(null);
  const [launching, setLaunching] = useState(false);
  const [runs, setRuns] = useState<LaunchRun[]>([]);
  const data = layout.data;
  const hosts = data?.hosts ?? [];
  const columns = useMemo(() => groupColumns(hosts, filter), [hosts, filter]);
  const counts = useMemo(() => stateCounts(hosts), [hosts]);
  const drawn = columns.reduce((n, c) => n + c.hosts.reduce((m, h) => m + h.vms.length, 0), 0);
  const named = drawn <= NAMED_TILES_UP_TO;
  const dagId = data?.launch_dag_id ?? "rackflow_launch_vms";

  // Follow the launches started here until their runs end (the layout's own poll shows the VMs).
  const going = runs.filter((r) => !["success", "failed"].includes(r.state)).map((r) => r.runId);
  useEffect(() => {
    if (!going.length) return;
    const timer = setInterval(async () => {
      const states = await Promise.all(
        going.map((id) =>
          getAirflow<{ state: string }>(`dags/${seg(dagId)}/dagRuns/${seg(id)}`).then(
            (r) => [id, r.state] as const,
            () => [id, "unknown"] as const,
          ),
        ),
      );
      setRuns((rs) => rs.map((r) => ({ ...r, state: states.find(([id]) => id === r.runId)?.[1] ?? r.state })));
      layout.refresh();
    }, 3000);
    return () => clearInterval(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [going.join(","), dagId]);

  const pickedVm = picked ? hosts.flatMap((h) => h.vms.map((vm) => ({ vm, host: h.name }))).find((x) => x.vm.name === picked) : undefined;
  const set = (key: keyof LayoutFilter) => (value: string) => setFilter({ ...filter, [key]: value });

  return (
    <Box data-testid="layout-page">
      <style>{CSS}</style>
      <PageHeader title="Server layout" updatedAt={layout.updatedAt} loading={layout.loading}>
        {data?.can_launch ? (
          <Button size="sm" colorPalette="blue" variant={launching ? "subtle" : "solid"} onClick={() => setLaunching(!launching)} data-testid="launch-open">
            {launching ? "Close launch form" : "Launch VMs"}
          </Button>
        ) : null}
      </PageHeader>
      <ErrorAlert error={layout.error} what="the layout" />
      {data ? (
        <Text fontSize="sm" color="fg.muted" mb={2} data-testid="summary">
          {data.summary.hosts} hosts ({data.summary.unreachable} unreachable) · {data.summary.vms} VMs,{" "}
          {data.summary.running_vms} running · {data.groups.length} groups · asked in {data.took_ms} ms
        </Text>
      ) : null}
      {launching && data?.can_launch ? (
        <Section title="Launch VMs" testId="launch">
          <LaunchForm hosts={hosts.map((h) => h.name)} groups={data.groups} dagId={dagId} onLaunched={(r) => setRuns((rs) => [r, ...rs])} />
          <LaunchRuns runs={runs} dagId={dagId} hosts={hosts} />
        </Section>
      ) : runs.length ? (
        <LaunchRuns runs={runs} dagId={dagId} hosts={hosts} />
      ) : null}
      <Flex gap={2} wrap="wrap" my={3} align="center" data-testid="filters">
        <Input size="sm" width="14rem" name="search" placeholder="host or VM name contains…" value={filter.text} onChange={(e) => set("text")(e.target.value)} />
        <Select label="state" value={filter.state} options={Object.keys(counts).sort()} onChange={set("state")} />
        <Select label="group" value={filter.group} options={data?.groups ?? []} onChange={set("group")} />
        <Select label="host" value={filter.host} options={hosts.map((h) => h.name)} onChange={set("host")} />
        {filtering(filter) ? (
          <Button size="xs" variant="ghost" onClick={() => setFilter(NO_FILTER)}>
            clear
          </Button>
        ) : null}
        <Box flex="1" />
        <Legend counts={counts} />
      </Flex>
      {pickedVm ? (
        <Text fontSize="sm" mb={2} data-testid="picked">
          <b>{pickedVm.vm.name}</b> on {pickedVm.host} · <StateBadge state={pickedVm.vm.state} /> · {pickedVm.vm.vcpus} vCPU ·{" "}
          {formatMib(pickedVm.vm.memory_mib)} · {pickedVm.vm.image ?? "no image"} · {pickedVm.vm.addresses.join(", ") || "no address yet"}
        </Text>
      ) : null}
      <Grid className="rf-columns" gridAutoFlow="column" gridAutoColumns="minmax(15rem, 1fr)" gap={3} overflowX="auto" pb={2} data-testid="columns">
        {columns.map((col) => (
          <Stack key={col.group} gap={2} className="group-column" data-group={col.group}>
            <Flex align="baseline" gap={2} borderBottomWidth="2px" borderColor="border.emphasized" pb={1}>
              <Text fontWeight="bold">{col.group}</Text>
              <Text fontSize="xs" color="fg.muted">
                {col.hosts.length} hosts · {col.vms} VMs · {col.running} running
              </Text>
            </Flex>
            {col.hosts.map((shown) => (
              <HostBox key={shown.host.name} shown={shown} picked={picked} named={named} onPick={setPicked} onDetail={setDetail} />
            ))}
          </Stack>
        ))}
      </Grid>
      {data && columns.length === 0 ? <Text color="fg.muted">nothing matches the filters</Text> : null}
      <HostDetail name={detail} onClose={() => setDetail(null)} />
    </Box>
  );
}

// Layout of the many small parts, once for the page; colours come from the theme's tokens inline.
const CSS = `
.rf-bar { display: grid; grid-template-columns: 2.6rem 1fr 7.5rem; align-items: center; gap: 6px; font-size: 11px; margin-top: 4px; }
.rf-bar-label, .rf-bar-text { color: var(--chakra-colors-fg-muted); white-space: nowrap; }
.rf-bar-text { text-align: end; }
.rf-bar-track { height: 6px; border-radius: 3px; overflow: hidden; display: block; }
.rf-bar-fill { height: 100%; display: block; }
.rf-tiles { display: flex; flex-wrap: wrap; gap: 2px; margin-top: 6px; }
.rf-tile { width: 12px; height: 12px; border-radius: 2px; border: 0; padding: 0; cursor: pointer; display: inline-block; }
.rf-tile.rf-named { width: auto; height: auto; padding: 1px 6px; border-radius: 3px; font-size: 11px; line-height: 16px; font-family: var(--chakra-fonts-mono); }
.rf-tile.rf-selected { outline: 2px solid var(--chakra-colors-fg); outline-offset: 1px; }
.rf-swatch { width: 10px; height: 10px; border-radius: 2px; display: inline-block; }
.rf-tiles { min-height: 4px; }
`;
