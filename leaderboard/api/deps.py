"""The one request dependency: the running services (:class:`Services`). Tokens are checked
by the completion itself (:mod:`leaderboard.api.complete`); the reads are public."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from leaderboard.api.services import Services


async def services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, which cost
    # two thirds of the throughput of the read path.
    svc: Services = request.app.state.services
    return svc


ServicesDep = Annotated[Services, Depends(services)]
