import { ChakraProvider, defaultSystem } from "@chakra-ui/react";
import { act, cleanup, render, screen } from "@testing-library/react";
import type { ReactNode } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { ApiError } from "./api";
import { usePoll } from "./poll";
import { DataTable, ErrorAlert, StateBadge } from "./ui";

const wrap = (node: ReactNode) => render(<ChakraProvider value={defaultSystem}>{node}</ChakraProvider>);

afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

describe("DataTable", () => {
  it("renders each row's cells as text, never as HTML", () => {
    const rows = [{ name: "<img src=x onerror=alert(1)>", state: "FAILED" }];
    const { container } = wrap(
      <DataTable
        rows={rows}
        rowKey={(r) => r.name}
        columns={[
          { key: "name", header: "name" },
          { key: "state", header: "state", render: (r) => <StateBadge state={r.state} /> },
        ]}
      />,
    );
    expect(container.querySelector("img")).toBeNull();
    expect(screen.getByText("<img src=x onerror=alert(1)>")).toBeTruthy();
    expect(container.querySelector("[data-state='FAILED']")?.textContent).toBe("FAILED");
  });

  it("says so when there are no rows", () => {
    wrap(<DataTable rows={[]} rowKey={() => ""} columns={[{ key: "a", header: "a" }]} empty="no jobs yet" />);
    expect(screen.getByText("no jobs yet")).toBeTruthy();
  });
});

describe("ErrorAlert", () => {
  it("shows the API's message, and 403 as not allowed", () => {
    wrap(<ErrorAlert error={new ApiError(403, "'victor' may not submit or terminate jobs")} what="jobs" />);
    expect(screen.getByText("Not allowed to read jobs (403)")).toBeTruthy();
    expect(screen.getByText("'victor' may not submit or terminate jobs")).toBeTruthy();
  });
});

describe("usePoll", () => {
  it("loads now, refreshes on its interval and keeps the last good data on a failure", async () => {
    vi.useFakeTimers();
    let calls = 0;
    const load = vi.fn(async () => {
      calls += 1;
      if (calls === 2) throw new Error("server away");
      return calls;
    });
    function Probe() {
      const p = usePoll(load, [], 1000);
      return (
        <span data-testid="probe">
          {String(p.data)}|{p.error ? (p.error as Error).message : ""}|{p.updatedAt ? "at" : ""}
        </span>
      );
    }
    wrap(<Probe />);
    await act(async () => {
      await Promise.resolve();
    });
    expect(screen.getByTestId("probe").textContent).toBe("1||at");
    await act(async () => {
      vi.advanceTimersByTime(1000);
      await Promise.resolve();
    });
    expect(screen.getByTestId("probe").textContent).toBe("1|server away|at");
    await act(async () => {
      vi.advanceTimersByTime(1000);
      await Promise.resolve();
    });
    expect(screen.getByTestId("probe").textContent).toBe("3||at");
  });
});
