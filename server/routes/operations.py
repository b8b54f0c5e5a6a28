"""Health and metrics (who am I: `server.routes.users`)."""

from fastapi import APIRouter, Request, Response

from server.deps import Adapters, Chat, MetricsDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz(request: Request, adapters: Adapters) -> dict:
    """`status` is "ok", or "degraded" when this server does not serve the adapter the
    registry says is live (it refused to load it, and serves the one before it or the base
    model); `reason` then says which is which, and `refused_adapters` why.

    Both answer 200: a degraded server still answers every request, and since every
    replica reads the same registry, a load balancer that took degraded ones out of
    rotation would take them all out. Alert on `status` instead. (On the event loop, in
    memory only: it answers at once however busy the threads and the database are.)"""
    reason = adapters.degraded()
    return {"status": "degraded" if reason else "ok", "reason": reason,
            "model": adapters.base_name, "demo": request.app.state.is_demo,
            "live_adapter": adapters.live, "candidates": adapters.candidates,
            "canary": adapters.canary, "loaded_adapters": sorted(adapters.loaded),
            "refused_adapters": {v: error for v, (_, error) in adapters.failed.items()}}


@router.get("/metrics")
def metrics(metrics: MetricsDep, chat: Chat, adapters: Adapters) -> Response:
    metrics.queue_depth.set(chat.engine.queued)
    metrics.loaded_adapters.set(len(adapters.loaded))
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")
