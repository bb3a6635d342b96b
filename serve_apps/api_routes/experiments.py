"""A/B, canary and shadow experiments: list, status (as `mlhub ab status`), start, stop.

Creating and promoting stay with `mlhub ab create|promote`; outcomes are sent to the inference app
(``POST /v1/experiments/{id}/outcomes``)."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mlhub.domain.enums import ExperimentStatus
from mlhub.errors import NotFoundError
from serve_apps.api_routes.common import MAX_ID, Caller, Ctx, Text, plain

router = APIRouter(tags=["experiments"])

ExperimentRef = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                                    description="An experiment's id or name.")]


class StopBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text | None = Field(None, max_length=2000)


def _ref(ref: str) -> str:
    """An id too large to be one can only be a name that no experiment has (ids are BIGINT)."""
    if ref.isdigit() and int(ref) > MAX_ID:
        raise NotFoundError(f"experiment {ref!r} not found")
    return ref


@router.get("/experiments", summary="Your experiments, oldest first")
def list_experiments(ctx: Ctx, caller: Caller,
                     model: Annotated[Text | None, Query(min_length=1, max_length=256)] = None,
                     status: Annotated[ExperimentStatus | None, Query()] = None) -> dict[str, Any]:
    infos = ctx.experiments.list(caller, model=model, status=status.value if status else None)
    return {"experiments": plain(infos)}


@router.get("/experiments/{ref}", summary="An experiment's status: per-variant counts, means, intervals, verdict")
def experiment_status(ctx: Ctx, caller: Caller, ref: ExperimentRef) -> dict[str, Any]:
    return plain(ctx.experiments.status(caller, _ref(ref)))


@router.post("/experiments/{ref}/start", summary="Start a draft experiment (the router begins to route by it)")
def start(ctx: Ctx, caller: Caller, ref: ExperimentRef) -> dict[str, Any]:
    return plain(ctx.experiments.start(caller, _ref(ref)))


@router.post("/experiments/{ref}/stop", summary="Stop a running or draft experiment")
def stop(ctx: Ctx, caller: Caller, ref: ExperimentRef,
         body: Annotated[StopBody | None, Body()] = None) -> dict[str, Any]:
    return plain(ctx.experiments.stop(caller, _ref(ref), reason=(body or StopBody()).reason))
