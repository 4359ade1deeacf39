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
