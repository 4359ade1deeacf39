// Shapes of the rackflow API's answers the pages read (see the app's OpenAPI at rackflow/docs).

export interface Status {
  version: string;
  user: string;
  admin: boolean;
  can_read_jobs: boolean;
  can_submit_jobs: boolean;
}

export interface Vm {
  name: string;
  state: string;
  vcpus: number;
  memory_mib: number;
  image: string | null;
  addresses: string[];
}

export interface Host {
  name: string;
  group: string;
  rack: string | null;
  cpus: number;
  memory_mib: number;
  mode: string | null;
  status: string | null;
  hypervisor: string;
  hypervisor_error: string | null;
  used_cpus: number | null;
  used_memory_mib: number | null;
  free_cpus: number | null;
  free_memory_mib: number | null;
  vm_count: number | null;
  running_vms: number | null;
  vms: Vm[];
}

export interface Layout {
  generated_at: string;
  groups: string[];
  can_launch: boolean;
  hosts: Host[];
}

export interface JobEvent {
  time: string;
  state: string;
  message: string;
  scheduler_job_id: string | null;
  node: string | null;
}

export interface Job {
  job_id: string;
  owner: string | null;
  state: string;
  /** "api": a rackflow_job run; "s3": taken by an S3 intake (`origin` says from where). */
  source: "api" | "s3";
  origin: string | null;
  message: string | null;
  submitted_at: string | null;
  run_state: string | null;
  terminate_requested_by: string | null;
  properties: {
    scheduler: string | null;
    scheduler_job_id: string | null;
    exit_code: number | null;
    cpu_time: number | null;
    wall_time: number | null;
    max_memory: number | null;
    nodes: string[];
    workdir: string | null;
  };
  events: JobEvent[];
}

export interface JobList {
  jobs: Job[];
  total: number;
}

export interface JobOutput {
  job_id: string;
  stream: "stdout" | "stderr";
  content: string;
  truncated: boolean;
  size: number | null;
  path: string | null;
  note: string | null;
}

export interface PlanAction {
  node: string;
  action: string;
  reason: string;
}

export interface Plan {
  now: string;
  off_threshold_s: number;
  on_threshold_s: number;
  actions: PlanAction[];
  skipped: PlanAction[];
  notes: string[];
}

export interface DagRun {
  dag_id: string;
  dag_run_id: string;
  state: string;
  start_date: string | null;
  end_date: string | null;
  run_after: string | null;
}
