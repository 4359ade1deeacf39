// Every rackflow page by the url_route of its react_apps entry (rackflow_plugin/__init__.py, REACT_PAGES).
// To add a page: write pages/<Name>.tsx exporting a component, add it here and add its entry to
// REACT_PAGES in rackflow_plugin/__init__.py (same url_route).
import type { ComponentType } from "react";

import { ROUTES } from "../shared/links";
import { Dashboard } from "./Dashboard";
import { Intake } from "./Intake";
import { JobnetReport } from "./JobnetReport";
import { Jobs } from "./Jobs";
import { Power } from "./Power";
import { ServerLayout } from "./ServerLayout";

/** What Airflow passes a plugin page (set on DAG, run and task tabs). */
export interface PageProps {
  dagId?: string;
  runId?: string;
  taskId?: string;
  mapIndex?: string;
}

export const PAGES: Record<string, ComponentType<PageProps>> = {
  [ROUTES.dashboard]: Dashboard,
  [ROUTES.jobs]: Jobs,
  [ROUTES.intake]: Intake,
  [ROUTES.layout]: ServerLayout,
  [ROUTES.power]: Power,
  [ROUTES.jobnetReport]: JobnetReport,
};
