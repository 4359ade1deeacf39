// Server layout page: hosts and their VMs from ../api/hosts, refreshed every few seconds.
// "Launch VMs" triggers the launch DAG through Airflow's own REST API (same cookie), then follows
// the run: each VM of the launch is pending until libvirt reports it, then shows its state.
"use strict";

const REFRESH_MS = 5000;
const AIRFLOW_API = "../../api/v2"; // this page is served at <airflow>/rackflow/ui/layout
const launches = {}; // host name -> {runId, count, state}
let launchDagId = "rackflow_launch_vms";

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
  card.querySelector(".power").textContent = `power ${host.status || "unknown"} (mode ${host.mode || "?"})`;
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
  const form = card.querySelector(".launch-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    launch(host.name, new FormData(form));
  });
  renderLaunch(card, host);
  return card;
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
    await followLaunches();
    const layout = await getJson(`../api/hosts${group ? `?group=${encodeURIComponent(group)}` : ""}`);
    launchDagId = layout.launch_dag_id;
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

document.getElementById("group").addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
