// Where each page lives inside Airflow's UI. Paths are router paths from the UI's root: React Router
// prefixes Airflow's base path, so they hold behind a reverse-proxy prefix too.

/** Route of each rackflow page (the `url_route` of its react_apps entry in rackflow_plugin). */
export const ROUTES = {
  dashboard: "rackflow",
  jobs: "rackflow-jobs",
  intake: "rackflow-s3",
  power: "rackflow-power",
  layout: "rackflow-layout",
  jobnetReport: "rackflow-jobnet-report",
} as const;

export const pageLink = (route: string, sub = ""): string => `/plugin/${route}${sub ? `/${sub}` : ""}`;

export const jobLink = (jobId: string): string => pageLink(ROUTES.jobs, `job/${encodeURIComponent(jobId)}`);

export const jobsLink = (state?: string): string =>
  pageLink(ROUTES.jobs) + (state ? `?state=${encodeURIComponent(state)}` : "");

/** Airflow's own page of a DAG. */
export const dagLink = (dagId: string): string => `/dags/${encodeURIComponent(dagId)}`;

/** Airflow's own page of a DAG run. */
export const dagRunLink = (dagId: string, runId: string): string =>
  `/dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(runId)}`;
