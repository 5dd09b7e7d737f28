"""The HTTP ceiling: the same server stack (FastAPI on uvicorn, uvloop, httptools) answering a
constant JSON body the size of a top-10 response, with no work behind it."""

from __future__ import annotations

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
