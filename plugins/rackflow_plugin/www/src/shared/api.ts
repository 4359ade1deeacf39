// The one way rackflow's pages talk to the server.
//
// Auth is the page's own: inside Airflow's UI the browser holds Airflow's session cookie (`_token`,
// httponly), which Airflow's auth manager accepts on rackflow's routes as on its own; every request is
// same-origin with credentials, so the logged-in user is who the API sees. URLs are resolved against the
// document's base (Airflow writes `<base href>` from its base URL), never from "/", so the pages also
// work behind a reverse proxy that serves Airflow under a path prefix.

export type Query = Record<string, string | number | boolean | null | undefined>;

/** A request the server refused (or could not answer): its HTTP status and the API's message. */
export class ApiError extends Error {
  readonly status: number;
  readonly detail: unknown;

  constructor(status: number, detail: unknown, fallback = "") {
    super(describeDetail(detail) || fallback || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
}

function base(): string {
  return typeof document === "undefined" ? "http://localhost/" : document.baseURI;
}

function withQuery(url: URL, query?: Query): string {
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url.toString();
}

/** The URL of a rackflow API route (`jobs/123` -> `<base>rackflow/api/jobs/123`). */
export function apiUrl(path: string, query?: Query, baseUri: string = base()): string {
  return withQuery(new URL(`rackflow/api/${path.replace(/^\/+/, "")}`, baseUri), query);
}

/** The URL of one of Airflow's own REST routes (`dags/x/dagRuns` -> `<base>api/v2/dags/x/dagRuns`). */
export function airflowUrl(path: string, query?: Query, baseUri: string = base()): string {
  return withQuery(new URL(`api/v2/${path.replace(/^\/+/, "")}`, baseUri), query);
}

/** One path segment, escaped (job ids, host names and node names go through this). */
export const seg = (value: string): string => encodeURIComponent(value);

/**
 * The API's message as one line of text. FastAPI answers `{"detail": ...}` where detail is a string,
 * a list of validation errors (`{loc, msg}`), or rackflow's objects (`{message, problems}`,
 * `{message, vms}`).
 */
export function describeDetail(detail: unknown): string {
  if (detail === null || detail === undefined) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        if (item && typeof item === "object" && "msg" in item) {
          const loc = Array.isArray((item as { loc?: unknown }).loc)
            ? ((item as { loc: unknown[] }).loc.filter((p) => p !== "body" && p !== "query").join("."))
            : "";
          return loc ? `${loc}: ${String((item as { msg: unknown }).msg)}` : String((item as { msg: unknown }).msg);
        }
        return describeDetail(item);
      })
      .join("; ");
  }
  if (typeof detail === "object") {
    const d = detail as { message?: unknown; problems?: unknown; vms?: unknown; detail?: unknown };
    if ("detail" in d && d.message === undefined) return describeDetail(d.detail);
    const parts: string[] = [];
    if (d.message !== undefined) parts.push(String(d.message));
    if (Array.isArray(d.problems) && !(d.problems.length === 1 && d.problems[0] === d.message)) {
      parts.push(d.problems.map(String).join("; "));
    }
    if (Array.isArray(d.vms) && d.vms.length) parts.push(`VMs: ${d.vms.map(String).join(", ")}`);
    return parts.length ? parts.join(" — ") : JSON.stringify(detail);
  }
  return String(detail);
}

/** The problems of a refused job description, one per field, as the API listed them. */
export function problemsOf(err: unknown): string[] {
  if (err instanceof ApiError && err.detail && typeof err.detail === "object") {
    const problems = (err.detail as { problems?: unknown }).problems;
    if (Array.isArray(problems)) return problems.map(String);
    if (Array.isArray(err.detail)) return [describeDetail(err.detail)];
  }
  return [];
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  /** Send `body` as this text with this media type (e.g. JSDL as application/xml) instead of JSON. */
  contentType?: string;
  signal?: AbortSignal;
}

/** Fetch `url` as the logged-in user and parse its JSON; a non-2xx answer throws {@link ApiError}. */
export async function request<T>(url: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  let body: BodyInit | undefined;
  if (options.body !== undefined) {
    if (options.contentType) {
      headers["Content-Type"] = options.contentType;
      body = String(options.body);
    } else {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.body);
    }
  }
  let resp: Response;
  try {
    resp = await fetch(url, {
      method: options.method ?? (body === undefined ? "GET" : "POST"),
      credentials: "same-origin",
      headers,
      body,
      signal: options.signal,
    });
  } catch (exc) {
    if (exc instanceof DOMException && exc.name === "AbortError") throw exc;
    throw new ApiError(0, null, `cannot reach the server (${exc instanceof Error ? exc.message : String(exc)})`);
  }
  const text = await resp.text();
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    const detail = data && typeof data === "object" && "detail" in data ? (data as { detail: unknown }).detail : data;
    throw new ApiError(resp.status, detail, `${resp.status} ${resp.statusText}`.trim());
  }
  return data as T;
}

/** GET a rackflow route. */
export const getApi = <T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> =>
  request<T>(apiUrl(path, query), { signal });

/** POST to a rackflow route (JSON, or `contentType` text). */
export const postApi = <T>(path: string, body: unknown, contentType?: string): Promise<T> =>
  request<T>(apiUrl(path), { method: "POST", body, contentType });

/** GET one of Airflow's own REST routes (its auth applies as for Airflow's pages). */
export const getAirflow = <T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> =>
  request<T>(airflowUrl(path, query), { signal });
