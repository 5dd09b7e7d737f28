"""The chart's side of ``make chart-up``: the release rendered with the Helm SDK, and its
``helm test`` hook pods run to completion (:mod:`.chartpods` runs everything between)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from leaderboard_tools.containers import image, kubelet
from leaderboard_tools.containers.bootstrap import say
from leaderboard_tools.containers.engine import Engine
from leaderboard_tools.containers.kubelet import Doc, Objects, Pod

CHART = image.REPO / "charts" / "leaderboard"


class ChartUpError(Exception):
    """chart-up could not bring the release up; the message names the pod and the probe."""


def render(release: str, namespace: str, values: dict[str, Any]) -> list[Doc]:
    from helm_python import Chart  # the Helm SDK: a dev dependency, loaded only here

    chart = Chart.load(str(CHART))
    try:
        out = chart.render(values, name=release, namespace=namespace, is_install=True)
    finally:
        chart.close()
    docs: list[Doc] = []
    for path, text in out.items():
        if not path.endswith("NOTES.txt"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def helm_test(
    engine: Engine, hooks: list[Pod], objects: Objects, *, files: Path, label: str, network: str
) -> dict[str, str]:
    """``helm test``: each test-hook pod runs to completion and must exit 0."""
    results = {}
    for pod in hooks:
        user = engine.inspect(pod.container["image"], "{{.Config.User}}")
        run = kubelet.plan(pod, objects, image_user=user, files=files)
        done = engine.run(
            "run", "--rm", "--name", pod.name, "--label", label,
            "--network", network, *run.flags, *[f"--env={k}" for k in run.env],
            run.image, *run.args, check=False, env={**engine.env, **run.env},
            timeout=120,
        )  # fmt: skip
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            raise ChartUpError(f"helm test pod {pod.name} failed ({done.returncode}): {output}")
        results[pod.name] = output.splitlines()[-1] if output else "passed"
        say(f"helm test {pod.name}: {results[pod.name]}")
    return results
