// State colours, one table for every vocabulary the pages show: job (PSI/J) states, S3 intake
// statuses, Airflow run states, VM states and power statuses. Values are Chakra colour palettes, so
// Airflow's theme decides the actual shades in light and dark mode.

export type Palette = "green" | "red" | "orange" | "yellow" | "blue" | "cyan" | "purple" | "gray";

const PALETTES: Record<string, Palette> = {
  // job states (PSI/J) and S3 statuses
  completed: "green",
  failed: "red",
  canceled: "orange",
  active: "blue",
  running: "blue",
  queued: "gray",
  new: "cyan",
  accepted: "cyan",
  file_upload: "purple",
  staging_out: "cyan",
  unknown: "gray",
  // Airflow run and task states
  success: "green",
  upstream_failed: "orange",
  skipped: "gray",
  deferred: "purple",
  scheduled: "gray",
  // VM states
  paused: "yellow",
  shutoff: "gray",
  stopping: "yellow",
  crashed: "red",
  suspended: "yellow",
  // power statuses and modes
  on: "green",
  off: "gray",
  booting: "yellow",
  stopped: "gray",
  "error-stopped": "red",
  error: "red",
  // intakes
  live: "green",
};

/** The colour palette of `state` (case-insensitive; unknown states are gray). */
export function stateColor(state: string | null | undefined): Palette {
  if (!state) return "gray";
  return PALETTES[state.toLowerCase()] ?? "gray";
}

/** States that count as a failure on the dashboard's "recent failures". */
export const FAILED_STATES = new Set(["FAILED", "failed", "CANCELED", "error-stopped", "crashed"]);

/** The job states of the job API, in the order the pages list them (NEW: an S3 job claimed, not yet
 * submitted). */
export const JOB_STATES = ["NEW", "QUEUED", "ACTIVE", "COMPLETED", "FAILED", "CANCELED"] as const;
