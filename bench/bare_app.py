"""The HTTP ceiling: the same server stack (FastAPI on uvicorn, uvloop, httptools, the API's
server settings) answering a constant JSON body the size of a top-10 response, with no work
behind it. ``python -m bench.bare_app PORT`` serves it on 127.0.0.1."""

from __future__ import annotations

import sys

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

BODY = orjson.dumps(
    {"top": [{"rank": i, "userId": f"user-{i:06d}", "score": 1000 - i} for i in range(1, 11)]}
)

app = FastAPI()


@app.get("/bare")
async def bare() -> Response:
    return Response(BODY, media_type="application/json")


if __name__ == "__main__":
    from leaderboard.api.server import run_uvicorn

    run_uvicorn("bench.bare_app:app", "127.0.0.1", int(sys.argv[1]))
