import { afterEach, describe, expect, it, vi } from "vitest";

import { ApiError, airflowUrl, apiUrl, describeDetail, problemsOf, request } from "./api";

describe("apiUrl", () => {
  it("resolves against the document base, so a reverse-proxy prefix is kept", () => {
    expect(apiUrl("jobs", undefined, "https://ops.example/airflow/")).toBe("https://ops.example/airflow/rackflow/api/jobs");
    expect(apiUrl("/status", undefined, "http://h:8080/")).toBe("http://h:8080/rackflow/api/status");
    expect(airflowUrl("dags/~/dagRuns", { state: "failed" }, "https://ops.example/af/")).toBe(
      "https://ops.example/af/api/v2/dags/~/dagRuns?state=failed",
    );
  });

  it("drops empty query values and escapes the others", () => {
    expect(apiUrl("jobs", { state: "", limit: 5, owner: null, q: "a&b" }, "http://h/")).toBe(
      "http://h/rackflow/api/jobs?limit=5&q=a%26b",
    );
  });
});

describe("describeDetail", () => {
  it("reads FastAPI's string, validation-list and rackflow's object details", () => {
    expect(describeDetail("no job 'x'")).toBe("no job 'x'");
    expect(describeDetail([{ loc: ["body", "reason"], msg: "too long" }, { loc: ["query", "limit"], msg: "≤ 1000" }])).toBe(
      "reason: too long; limit: ≤ 1000",
    );
    expect(describeDetail({ message: "bad job", problems: ["executable: required", "duration: negative"] })).toBe(
      "bad job — executable: required; duration: negative",
    );
    expect(describeDetail({ message: "node busy", vms: ["db-01", "web-02"] })).toBe("node busy — VMs: db-01, web-02");
    expect(describeDetail({ message: "one problem", problems: ["one problem"] })).toBe("one problem");
    expect(describeDetail(null)).toBe("");
  });
});

describe("request", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("sends the session cookie (same-origin) and JSON, and returns the parsed answer", async () => {
    const fetchMock = vi.fn(async () => new Response(JSON.stringify({ ok: 1 }), { status: 200 }));
    vi.stubGlobal("fetch", fetchMock);
    await expect(request("http://h/rackflow/api/jobs", { body: { a: 1 } })).resolves.toEqual({ ok: 1 });
    const [, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(init.credentials).toBe("same-origin");
    expect(init.method).toBe("POST");
    expect((init.headers as Record<string, string>)["Content-Type"]).toBe("application/json");
    expect(init.body).toBe('{"a":1}');
  });

  it("sends text bodies with their media type (JSDL as XML)", async () => {
    const fetchMock = vi.fn(async () => new Response("{}", { status: 201 }));
    vi.stubGlobal("fetch", fetchMock);
    await request("http://h/x", { body: "<JobDefinition/>", contentType: "application/xml" });
    const [, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect((init.headers as Record<string, string>)["Content-Type"]).toBe("application/xml");
    expect(init.body).toBe("<JobDefinition/>");
  });

  it("throws ApiError with the status and the API's problems on a refusal", async () => {
    const detail = { message: "invalid job description", problems: ["executable: field required"] };
    vi.stubGlobal("fetch", vi.fn(async () => new Response(JSON.stringify({ detail }), { status: 400 })));
    const err = await request("http://h/x").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).message).toBe("invalid job description — executable: field required");
    expect(problemsOf(err)).toEqual(["executable: field required"]);
  });

  it("turns a network failure into ApiError status 0", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => Promise.reject(new TypeError("Failed to fetch"))));
    const err = (await request("http://h/x").catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(0);
    expect(err.message).toContain("cannot reach the server");
  });
});
