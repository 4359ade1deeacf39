import { describe, expect, it } from "vitest";

import { JOB_STATES, stateColor } from "./states";

describe("stateColor", () => {
  it("colours each vocabulary alike: success green, failure red, waiting gray", () => {
    expect(stateColor("COMPLETED")).toBe("green");
    expect(stateColor("success")).toBe("green");
    expect(stateColor("on")).toBe("green");
    expect(stateColor("FAILED")).toBe("red");
    expect(stateColor("error-stopped")).toBe("red");
    expect(stateColor("crashed")).toBe("red");
    expect(stateColor("QUEUED")).toBe("gray");
    expect(stateColor("running")).toBe("blue");
    expect(stateColor("CANCELED")).toBe("orange");
  });

  it("gives every job state a colour and unknown states gray", () => {
    for (const state of JOB_STATES) expect(stateColor(state)).not.toBeUndefined();
    expect(stateColor("no-such-state")).toBe("gray");
    expect(stateColor(null)).toBe("gray");
  });
});
