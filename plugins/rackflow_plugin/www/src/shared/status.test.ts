import { describe, expect, it } from "vitest";

import { jobsHeading } from "./status";

describe("jobsHeading", () => {
  it("says whose jobs the list holds: everyone's for admins, 'Your jobs' only while all are the user's", () => {
    expect(jobsHeading({ admin: true, user: "admin" }, ["alice", "rf-intake"])).toBe("Jobs (all users)");
    expect(jobsHeading({ admin: false, user: "bob" }, ["bob", "bob"])).toBe("Your jobs");
    expect(jobsHeading({ admin: false, user: "bob" }, [])).toBe("Your jobs");
    // make demo: the intake's visible_to names alice, so her list also holds rf-intake's S3 jobs.
    expect(jobsHeading({ admin: false, user: "alice" }, ["alice", "rf-intake"])).toBe("Jobs you can see");
    expect(jobsHeading(undefined, ["alice"])).toBe("Your jobs");
  });
});
