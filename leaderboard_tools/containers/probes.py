"""A pod's probes, carried out as a kubelet does: ``exec`` inside the container, ``httpGet``
and ``tcpSocket`` from the node (here: the host) to the pod's address. Each answers whether
it passed and a sentence that says why not."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from leaderboard_tools.containers.engine import Engine
from leaderboard_tools.containers.kubelet import Pod


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str


def describe(probe: dict[str, Any]) -> str:
    if "exec" in probe:
        return "exec " + " ".join(probe["exec"]["command"])
    if "httpGet" in probe:
        return f"httpGet {probe['httpGet'].get('path', '/')} on port {probe['httpGet']['port']}"
    if "tcpSocket" in probe:
        return f"tcpSocket on port {probe['tcpSocket']['port']}"
    return str(probe)


async def run(engine: Engine, pod: Pod, probe: dict[str, Any], address: str | None) -> Outcome:
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "exec" in probe:
            return await _exec(engine, pod, probe["exec"]["command"], timeout)
        if address is None:
            return Outcome(False, "the pod has no address")
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{address}:{pod.port(get['port'])}{get.get('path', '/')}"
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await client.get(url)
            ok = 200 <= response.status_code < 400
            return Outcome(ok, f"HTTP {response.status_code}")
        if "tcpSocket" in probe:
            port = pod.port(probe["tcpSocket"]["port"])
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
            writer.close()
            return Outcome(True, "connected")
    except (httpx.HTTPError, OSError, TimeoutError) as error:
        return Outcome(False, f"{type(error).__name__}: {error}".rstrip(": "))
    return Outcome(False, f"unsupported probe {probe}")


async def _exec(engine: Engine, pod: Pod, command: list[str], timeout: float) -> Outcome:
    process = await asyncio.create_subprocess_exec(
        engine.name, "exec", pod.name, *command,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dict(engine.env),
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout + 5)  # + exec's own start
    except TimeoutError:
        process.kill()
        await process.wait()
        return Outcome(False, f"timed out after {timeout:.0f} s")
    text = out.decode(errors="replace").strip().splitlines()
    last = text[-1] if text else ""
    return Outcome(process.returncode == 0, f"exit {process.returncode}: {last}".rstrip(": "))
