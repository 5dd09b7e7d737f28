"""`make bench`'s report: what the README's performance table says, from a run's results."""

from __future__ import annotations

from typing import Any

from bench import cpu_budget
from bench.report import render
from bench.sampling import summarise_stacks

BUDGET = {
    cpu_budget.TASK: 5.0,
    "JWT (HS256)": 35.0,
    "rate limit (Redis script)": 25.0,
    "body validation": 8.0,
    "award transaction (group commit)": 120.0,
    "ranking update (Redis script)": 40.0,
    cpu_budget.FLOW: 240.0,
}


def run(**extra: Any) -> dict[str, Any]:
    def path(rps: float, cpu: dict[str, int]) -> dict[str, Any]:
        return {"rps": rps, "p50_ms": 40.0, "p99_ms": 80.0, "cpu_us": cpu,
                "requests": int(rps * 10), "non_2xx": 0}  # fmt: skip

    return {
        "api_complete": path(1300, {"api": 650, "postgres member0": 400, "redis": 110}),
        "pgbench_one_row": path(2000, {"postgres member0": 640}),
        "pgbench_award": path(1000, {"postgres member0": 1300}),
        "api_top10": path(11000, {"api": 120}),
        "bare_endpoint": path(4000, {}),
        "api_worker_cpu_s": [11.0, 11.2],
        "ratios": {"complete_vs_one_row": 0.65, "complete_vs_pgbench": 1.3, "top10_vs_bare": 2.75},
        "setup": {"machine": "2 cores", "api_workers": 2, "connections": 64,
                  "pgbench_clients": 32, "duration_s": 10, "rounds": 2, "date": "2026-12-02"},
        **extra,
    }  # fmt: skip


def test_the_table_leads_with_the_single_row_ratio_and_the_cpu_bar() -> None:
    table = render(run())
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert "single-row award statement" in rows[1] and "**65%**" in rows[1]
    assert "≥ 100%, p99 ≤ 50 ms" in rows[1]
    assert "650 µs" in rows[3] and "≤ 150 µs" in rows[3]
    assert "**275%**" in rows[4] and "≥ 200%" in rows[4]
    assert "step by step" not in table  # no budget in this run


def test_the_notes_give_the_budget_net_of_the_task_every_step_pays() -> None:
    notes = render(run(cpu_budget=BUDGET))
    assert "JWT (HS256) 30, rate limit (Redis script) 20" in notes
    assert "award transaction (group commit) 115" in notes
    assert "the whole flow without HTTP 240" in notes
    assert "(the cached top-10 read) 120; under wrk 650" in notes


def test_the_printed_budget_shows_what_interleaving_adds_under_load() -> None:
    text = cpu_budget.render(BUDGET, http_server_us=120, under_load_us=650)
    lines = {line.rsplit(maxsplit=1)[0].strip(): int(line.split()[-1]) for line in
             text.splitlines()[1:]}  # fmt: skip
    assert lines["JWT (HS256)"] == 30
    assert lines[cpu_budget.FLOW] == 240
    assert lines["beyond flow + HTTP server: interleaving"] == 650 - 240 - 120


def test_profile_summary_counts_own_and_inclusive_samples() -> None:
    collapsed = "main (a.py:1);work (b.py:2);write (libc.so.6) 30\nmain (a.py:1);idle (c.py:3) 10\n"
    summary = summarise_stacks(collapsed)
    assert summary.splitlines()[0] == "40 samples; own %, inclusive %, function"
    assert "  0.0 100.0  main (a.py:1)" in summary
    assert " 75.0  75.0  write (libc.so.6)" in summary


def test_the_archiving_row_compares_with_archiving_off_against_the_95_percent_bar() -> None:
    def path(rps: float) -> dict[str, Any]:
        return {"rps": rps, "p50_ms": 18.0, "p99_ms": 40.0}

    table = render(run(archiving={"on": path(3040), "off": path(3200), "ratio": 0.95}))
    row = next(line for line in table.splitlines() if "WAL archiving on" in line)
    assert "3,040" in row and "archiving off: 3,200/s" in row
    assert "**95%**" in row and "≥ 95%" in row
