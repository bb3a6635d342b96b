"""The model registry: list, show, versions, compare, gated promotion and rollback."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mlhub.registry.maintenance import MAX_COMPARED
from serve_apps.api_routes.common import MAX_ID, Caller, Ctx, Limit, Text, plain

router = APIRouter(tags=["registry"])

ModelName = Annotated[Text, Path(min_length=1, max_length=256, description="A registered model's name.")]


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_ID, description="The version to promote.")
    to: Text = Field("champion", min_length=1, max_length=64,
                     description="An alias (champion, challenger, ...) or a stage (staging, production, archived).")
    force: bool = Field(False, description="Promote even if gates fail (needs a reason; audited).")
    reason: Text | None = Field(None, max_length=2000)
    dry_run: bool = Field(False, description="Only report the gates' verdicts.")


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: Text = Field("champion", min_length=1, max_length=64)
    reason: Text | None = Field(None, max_length=2000)


def _version(v) -> dict[str, Any]:
    return {**plain(v), "ref": v.ref}


@router.get("/models", summary="Your registered models with their latest version and aliases")
def list_models(ctx: Ctx, caller: Caller) -> dict[str, Any]:
    return {"models": plain(ctx.registry.list_models(caller))}


@router.get("/models/compare", summary="Versions side by side (training and evaluation metrics)")
def compare(ctx: Ctx, caller: Caller,
            refs: Annotated[list[Text], Query(min_length=1, max_length=MAX_COMPARED * 2,
                                              description="`name/3`, `name@champion`, ... (repeat it, or "
                                                          "comma-separate)")]) -> dict[str, Any]:
    names = [r.strip() for item in refs for r in item.split(",") if r.strip()]
    c = ctx.registry.compare(caller, names)
    return {"versions": [_version(v) for v in c.versions], "rows": plain(c.rows), "best": c.best,
            "confusion": plain(c.confusion)}


@router.get("/models/{name}", summary="One model: description, tags, gates, aliases and stages")
def show(ctx: Ctx, caller: Caller, name: ModelName) -> dict[str, Any]:
    return plain(ctx.registry.show(caller, name))


@router.get("/models/{name}/versions", summary="A page of a model's versions, oldest first (or newest first)")
def versions(ctx: Ctx, caller: Caller, name: ModelName,
             include_deleted: Annotated[bool, Query()] = False,
             newest_first: Annotated[bool, Query()] = False,
             offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Skip this many versions.")] = 0,
             limit: int = Limit(100)) -> dict[str, Any]:
    rows = ctx.registry.versions(caller, name, include_deleted=include_deleted, limit=limit + 1, offset=offset,
                                 newest_first=newest_first)
    return {"model": name, "versions": [_version(v) for v in rows[:limit]],
            "next_offset": offset + limit if len(rows) > limit else None}


@router.post("/models/{name}/promote", summary="Move an alias or set a stage, through the model's gates")
def promote(ctx: Ctx, caller: Caller, name: ModelName, body: Annotated[PromoteBody, Body()]) -> dict[str, Any]:
    if body.dry_run:
        verdicts = ctx.registry.check_promotion(caller, name, body.version, body.to)
        return {"model": name, "version": body.version, "target": body.to, "dry_run": True,
                "passed": all(g.passed for g in verdicts), "gates": [g.to_dict() for g in verdicts]}
    r = ctx.registry.promote(caller, name, body.version, body.to, reason=body.reason, force=body.force)
    return {**plain(r), "gates": [g.to_dict() for g in r.gates]}


@router.post("/models/{name}/rollback", summary="Give an alias back to the version that held it before")
def rollback(ctx: Ctx, caller: Caller, name: ModelName,
             body: Annotated[RollbackBody | None, Body()] = None) -> dict[str, Any]:
    body = body or RollbackBody()
    r = ctx.registry.rollback(caller, name, body.alias, reason=body.reason)
    return plain(r)
