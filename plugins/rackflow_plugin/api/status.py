"""Who am I and which rackflow is this: the smallest authenticated route."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from rackflow import __version__
from rackflow_plugin.security import CurrentUser, is_admin, may_use_jobs

router = APIRouter(tags=["status"])


class StatusOut(BaseModel):
    version: str
    user: str
    admin: bool
    can_read_jobs: bool = Field(description="May read their jobs (the job API's GET right).")
    can_submit_jobs: bool = Field(description="May submit and terminate jobs (the pages hide it otherwise).")


@router.get("/status", response_model=StatusOut, summary="rackflow version and the calling user")
def status(user: CurrentUser) -> StatusOut:
    return StatusOut(
        version=__version__,
        user=user.get_name(),
        admin=is_admin(user),
        can_read_jobs=may_use_jobs(user, "GET"),
        can_submit_jobs=may_use_jobs(user, "POST"),
    )
