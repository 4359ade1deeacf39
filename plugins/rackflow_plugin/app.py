"""The FastAPI app Airflow's API server mounts at ``/rackflow``: JSON under ``/api``, the pages' bundle
under ``/ui/app``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse

from rackflow import __version__, settings
from rackflow_plugin.api import fleet, intake, jobnets, jobs, power, status, tes
from rackflow_plugin.limits import LIMIT_RESPONSES, RequestLimits
from rackflow_plugin.security import BasicAuth, CurrentUser

URL_PREFIX = "/rackflow"
# The React pages' bundle, built from www/ by `make ui` (npm ci && npm run build) into www/dist/.
BUNDLE_DIR = Path(__file__).parent / "www" / "dist"
BUNDLE_NAME = "rackflow.umd.js"

# Each capability adds its router here; one list, one place.
ROUTERS: list[APIRouter] = [
    status.router,
    jobnets.router,
    jobs.router,
    power.router,
    fleet.router,
    intake.router,
]


def create_app() -> FastAPI:
    app = FastAPI(
        title="rackflow",
        version=__version__,
        description="rackflow's API: fleet layout, VM launch, jobnet reports, batch jobs and power. "
        "Authenticate with a token from Airflow's `POST /auth/token` (Bearer header) or the UI's cookie.",
    )
    for router in ROUTERS:
        app.include_router(router, prefix="/api", responses=LIMIT_RESPONSES)
    app.include_router(tes.router, responses=LIMIT_RESPONSES)  # GA4GH TES at /rackflow/ga4gh/tes/v1
    app.add_api_route(f"/ui/app/{BUNDLE_NAME}", _bundle, methods=["GET"], include_in_schema=False)
    app.add_middleware(
        RequestLimits,
        routes=app.router.routes,
        max_body_bytes=settings.api_max_body_bytes(),
        max_json_depth=settings.api_max_json_depth(),
    )
    app.add_middleware(BasicAuth, path_prefix=tes.PREFIX)  # TES clients may send Basic credentials
    return app


def _bundle(user: CurrentUser) -> FileResponse:
    bundle = BUNDLE_DIR / BUNDLE_NAME
    if not bundle.is_file():
        from fastapi import HTTPException

        raise HTTPException(status_code=404, detail="rackflow's UI bundle is not built: run `make ui`")
    return FileResponse(bundle, media_type="text/javascript", headers={"Cache-Control": "no-cache"})
