"""The tenant's audit log, as `mlhub audit list` shows it."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from serve_apps.api_routes.common import Caller, Ctx, Limit, Text, plain

router = APIRouter(tags=["audit"])


def _aware(dt: datetime | None) -> datetime | None:
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=UTC)


@router.get("/audit", summary="Audit events of your tenant, newest first")
def audit(ctx: Ctx, caller: Caller,
          action: Annotated[Text | None, Query(max_length=128, description="An action or prefix (`job.`, "
                                                                            "`model.promote`).")] = None,
          target: Annotated[Text | None, Query(max_length=256, description="A target type or type:id (`job:42`).")]
          = None,
          since: Annotated[datetime | None, Query(description="ISO date/time (UTC if no offset).")] = None,
          until: Annotated[datetime | None, Query(description="ISO date/time (UTC if no offset).")] = None,
          limit: int = Limit(100, 10_000)) -> dict[str, Any]:
    records = ctx.audit.list(caller, action=action, target=target, since=_aware(since), until=_aware(until),
                             limit=limit)
    return {"events": plain(records)}
