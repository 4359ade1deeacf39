// Who is looking and what they may do (the pages hide actions the API would refuse).
import { useEffect, useState } from "react";

import { getApi } from "./api";
import type { Status } from "./types";

let cached: Promise<Status> | undefined;

/** `rackflow/api/status`, asked once per page load. */
export function loadStatus(): Promise<Status> {
  cached ??= getApi<Status>("status").catch((exc: unknown) => {
    cached = undefined;
    throw exc;
  });
  return cached;
}

/** The caller's status, or undefined while it loads (or when it cannot be read). */
export function useStatus(): Status | undefined {
  const [status, setStatus] = useState<Status>();
  useEffect(() => {
    loadStatus().then(setStatus, () => setStatus(undefined));
  }, []);
  return status;
}

/** The jobs list's heading: admins see everyone's; a user sees their own jobs plus the S3 intake jobs
 * whose intake names them in `visible_to` (owned by the intake's account), so the heading says
 * "Your jobs" only while every listed job is theirs. */
export function jobsHeading(status: Pick<Status, "admin" | "user"> | undefined, owners: (string | null)[]): string {
  if (status?.admin) return "Jobs (all users)";
  if (status && owners.some((o) => o !== status.user)) return "Jobs you can see";
  return "Your jobs";
}
