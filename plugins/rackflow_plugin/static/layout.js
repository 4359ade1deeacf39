// Server layout page: hosts and their VMs from ../api/hosts, refreshed every few seconds.
// "Launch VMs" triggers the launch DAG through Airflow's own REST API (same cookie), then follows
// the run: each VM of the launch is pending until libvirt reports it, then shows its state.
// Power: each host shows its power status, mode, last transition (../api/power/nodes) and, for users
// allowed to trigger rackflow_power (../api/power/can-act), power on/off buttons; a refused power off
// (409) shows the reason and the VMs that block it.
"use strict";

const REFRESH_MS = 5000;
const AIRFLOW_API = "../../api/v2"; // this page is served at <airflow>/rackflow/ui/layout
const launches = {}; // host name -> {runId, count, state}
let launchDagId = "rackflow_launch_vms";
let canLaunch = false; // may the user trigger the launch DAG? (../api/hosts says; the server checks again)
let canPower = false; // may the user trigger rackflow_power? asked once at load
let powerNodes = {}; // host name -> node from ../api/power/nodes (last transition)
const powerRuns = {}; // host name -> {text, cls, runId, state} of the last power request
const POWER_DAG_ID = "rackflow_power";

// Inventory times come from SQLite without a zone: they are UTC.
function when(t) {
  if (!t) return "";
  const zoned = /[zZ]|[+-]\d\d:?\d\d$/.test(t) ? t : `${t}Z`;
  return new Date(zoned).toLocaleString();
}

async function getJson(url, options) {
  const resp = await fetch(url, { credentials: "same-origin", ...options });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw new Error(`${resp.status}: ${detail}`);
  }
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
}

function renderHost(host) {
  const card = document.getElementById("host-card").content.firstElementChild.cloneNode(true);
  card.dataset.host = host.name;
  card.classList.toggle("unreachable", host.hypervisor !== "ok");
  card.querySelector(".host-name").textContent = host.name;
  card.querySelector(".group").textContent = host.group;
  const power = card.querySelector(".power");
  power.textContent = `power ${host.status || "unknown"}`;
  power.classList.add(`power-${host.status || "unknown"}`);
  renderPower(card, host);
  const hv = card.querySelector(".hypervisor");
  hv.textContent = host.hypervisor;
  hv.classList.add(host.hypervisor);
  card.querySelector(".hypervisor-error").textContent = host.hypervisor_error || "";
  card.querySelector(".capacity").textContent = host.hypervisor === "ok"
    ? `vCPUs ${host.used_cpus}/${host.cpus} used, ${host.free_cpus} free · memory ${host.used_memory_mib}/${host.memory_mib} MiB used, ${host.free_memory_mib} free · ${host.vm_count} VMs (${host.running_vms} running)`
    : `capacity ${host.cpus} vCPUs, ${host.memory_mib} MiB · VMs unknown`;
  const body = card.querySelector("tbody");
  for (const vm of host.vms) {
    const row = body.insertRow();
    row.dataset.vm = vm.name;
    cell(row, vm.name);
    cell(row, vm.state, `state-${vm.state}`);
    cell(row, vm.vcpus);
    cell(row, vm.memory_mib);
    cell(row, vm.image || "");
    cell(row, vm.addresses.join(", "));
  }
  card.querySelector("details.launch").hidden = !canLaunch;
  const form = card.querySelector(".launch-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    launch(host.name, new FormData(form));
  });
  renderLaunch(card, host);
  return card;
}

function renderPower(card, host) {
  card.querySelector(".power-mode").textContent = `mode ${host.mode || "?"}`;
  card.querySelector(".power-since").textContent = host.status_since ? `status since ${when(host.status_since)}` : "";
  const t = (powerNodes[host.name] || {}).last_transition;
  card.querySelector(".power-transition").textContent = t
    ? `last: ${t.field} ${t.from_value || "none"} → ${t.to_value} by ${t.actor}, ${when(t.at)}${t.reason ? ` (${t.reason})` : ""}`
    : "";
  card.querySelector(".power-error").textContent = host.last_error ? `last error: ${host.last_error}` : "";
  const actions = card.querySelector(".power-actions");
  if (canPower) {
    actions.hidden = false;
    for (const button of actions.querySelectorAll("button")) {
      button.addEventListener("click", () => requestPower(host.name, button.dataset.action));
    }
  } else {
    actions.remove(); // no buttons at all for users who may not power nodes
  }
  const run = powerRuns[host.name];
  const message = card.querySelector(".power-message");
  if (run) {
    message.textContent = run.runId ? `${run.text} — run ${run.runId}: ${run.state}` : run.text;
    message.classList.add(run.cls);
  }
}

async function requestPower(hostName, action) {
  powerRuns[hostName] = { text: `Asking to power ${action} ${hostName}…`, cls: "pending" };
  refresh();
  const resp = await fetch(`../api/power/nodes/${encodeURIComponent(hostName)}/${action}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ migrate: false }),
  });
  const body = await resp.json().catch(() => ({}));
  if (resp.ok) {
    powerRuns[hostName] = { text: `Power ${action} accepted: ${body.decision}`, cls: "accepted", runId: body.run_id, state: "queued" };
  } else if (resp.status === 409) {
    const d = body.detail || {};
    const vms = (d.vms || []).length ? ` — VMs: ${d.vms.join(", ")}` : "";
    powerRuns[hostName] = { text: `Power ${action} refused: ${d.message}${vms}`, cls: "refused" };
  } else {
    const d = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    powerRuns[hostName] = { text: `Power ${action} failed (${resp.status}): ${d}`, cls: "refused" };
  }
  refresh();
}

async function followPower() {
  for (const run of Object.values(powerRuns)) {
    if (!run.runId || ["success", "failed"].includes(run.state)) continue;
    try {
      const r = await getJson(`${AIRFLOW_API}/dags/${POWER_DAG_ID}/dagRuns/${encodeURIComponent(run.runId)}`);
      run.state = r.state;
    } catch (err) {
      run.state = `unknown (${err.message})`;
    }
  }
}

async function loadPowerNodes() {
  // Last transitions need read access to rackflow_power; without it the cards simply omit them.
  try {
    const nodes = await getJson("../api/power/nodes");
    powerNodes = Object.fromEntries(nodes.map((n) => [n.name, n]));
  } catch (err) {
    powerNodes = {};
  }
}

function renderLaunch(card, host) {
  const launch = launches[host.name];
  const box = card.querySelector(".launch-status");
  if (!launch) return;
  if (launch.error) {
    box.innerHTML = "";
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = `Launch refused: ${launch.error}`;
    box.appendChild(p);
    return;
  }
  const tag = `${launchDagId}/${launch.runId}/`;
  const mine = host.vms.filter((vm) => (vm.launch || "").startsWith(tag));
  const items = mine.map((vm) => [vm.name, launch.state === "failed" ? "failed" : vm.state === "running" ? "running" : "pending"]);
  for (let i = mine.length; i < launch.count; i++) {
    items.push([`(VM ${i + 1})`, launch.state === "failed" ? "failed" : "pending"]);
  }
  box.innerHTML = "";
  const title = document.createElement("p");
  title.className = "launch-run";
  title.textContent = `Launch ${launch.runId}: ${launch.state}`;
  box.appendChild(title);
  const list = document.createElement("ul");
  for (const [name, state] of items) {
    const li = document.createElement("li");
    li.dataset.vm = name;
    li.innerHTML = `<span class="vm-name"></span> <span class="state-${state}">${state}</span>`;
    li.querySelector(".vm-name").textContent = name;
    list.appendChild(li);
  }
  box.appendChild(list);
}

async function launch(hostName, data) {
  const conf = {
    host: hostName,
    image: data.get("image"),
    count: Number(data.get("count")),
    pattern: data.get("pattern"),
    vcpus: Number(data.get("vcpus")),
    memory_mib: Number(data.get("memory_mib")),
    network: data.get("network") || null,
  };
  try {
    const run = await getJson(`${AIRFLOW_API}/dags/${launchDagId}/dagRuns`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ logical_date: null, conf }),
    });
    launches[hostName] = { runId: run.dag_run_id, count: conf.count, state: run.state };
  } catch (err) {
    launches[hostName] = { error: err.message };
  }
  refresh();
}

async function followLaunches() {
  for (const launch of Object.values(launches)) {
    if (!launch.runId || ["success", "failed"].includes(launch.state)) continue;
    try {
      const run = await getJson(`${AIRFLOW_API}/dags/${launchDagId}/dagRuns/${encodeURIComponent(launch.runId)}`);
      launch.state = run.state;
    } catch (err) {
      launch.state = `unknown (${err.message})`;
    }
  }
}

async function refresh() {
  const group = document.getElementById("group").value;
  const errorBox = document.getElementById("error");
  try {
    await Promise.all([followLaunches(), followPower()]);
    const [layout] = await Promise.all([
      getJson(`../api/hosts${group ? `?group=${encodeURIComponent(group)}` : ""}`),
      loadPowerNodes(),
    ]);
    launchDagId = layout.launch_dag_id;
    canLaunch = !!layout.can_launch;
    const select = document.getElementById("group");
    for (const g of layout.groups) {
      if (![...select.options].some((o) => o.value === g)) select.add(new Option(g, g));
    }
    const s = layout.summary;
    document.getElementById("summary").textContent =
      `${s.hosts} hosts (${s.unreachable} unreachable) · ${s.vms} VMs, ${s.running_vms} running`;
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()} (${layout.took_ms} ms)`;
    const container = document.getElementById("hosts");
    // Keep open launch forms open, with what the user typed, across the refresh.
    const open = {};
    for (const details of container.querySelectorAll("details[open]")) {
      open[details.closest(".host").dataset.host] = new FormData(details.querySelector("form"));
    }
    container.replaceChildren(...layout.hosts.map(renderHost));
    for (const card of container.querySelectorAll(".host")) {
      const typed = open[card.dataset.host];
      if (!typed) continue;
      card.querySelector("details").open = true;
      for (const [name, value] of typed) card.querySelector(`form [name="${name}"]`).value = value;
    }
    errorBox.hidden = true;
  } catch (err) {
    errorBox.textContent = `Cannot load the layout: ${err.message}`;
    errorBox.hidden = false;
  }
}

async function start() {
  try {
    canPower = !!(await getJson("../api/power/can-act")).can_act;
  } catch (err) {
    canPower = false;
  }
  document.getElementById("group").addEventListener("change", refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
