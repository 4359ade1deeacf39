"""Who am I and which rackflow is this: the smallest authenticated route."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from rackflow import __version__
from rackflow_plugin.security import CurrentUser, is_admin

router = APIRouter(tags=["status"])


class StatusOut(BaseModel):
    version: str
    user: str
    admin: bool


@router.get("/status", response_model=StatusOut, summary="rackflow version and the calling user")
def status(user: CurrentUser) -> StatusOut:
    return StatusOut(version=__version__, user=user.get_name(), admin=is_admin(user))
