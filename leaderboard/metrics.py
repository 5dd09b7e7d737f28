"""Prometheus metrics of the API. No user ids in labels: only routes, actions, codes.

Each API process exports its own; in Kubernetes run one worker per pod (the chart does) and
let Prometheus sum over pods.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "leaderboard_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "leaderboard_http_request_duration_seconds",
    "Time from request to the end of the response",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
COMPLETIONS = Counter("leaderboard_completions_total", "Completions committed", ["action"])
POINTS = Counter("leaderboard_points_awarded_total", "Points awarded by committed completions")
REJECTED = Counter(
    "leaderboard_completions_rejected_total", "Completions refused, by error code", ["code"]
)
WRITES_HELD = Counter(
    "leaderboard_writes_held_total",
    "Award attempts that found no writable primary and waited to try again",
)
ADMIN_ACTIONS = Counter(
    "leaderboard_admin_actions_total",
    "Admin API actions done (ban, unban, adjust, erase, export)",
    ["action"],
)
RATE_LIMITED = Counter(
    "leaderboard_rate_limited_total", "Requests refused by the rate limit", ["backend"]
)
TOP10_CHANGES = Counter(
    "leaderboard_top10_changes_total", "Top-10 membership changes published", ["board"]
)
SEASON_RESETS = Counter(
    "leaderboard_season_resets_total",
    "Season starts this process announced (every process does; the first one publishes)",
    ["board"],
)
REDIS_FALLBACKS = Counter(
    "leaderboard_redis_fallbacks_total",
    "Operations that fell back because Redis was unreachable",
    ["operation"],
)
AWARD_BATCH = Histogram(
    "leaderboard_award_batch_size",
    "Completions awarded together in one PostgreSQL transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
# Where an award's time goes: waiting for one of the process's transaction slots (the queue
# that group commit batches), then the batch's transaction (statement, commit, standby).
AWARD_QUEUE = Histogram(
    "leaderboard_award_queue_seconds",
    "Time a completion waited for a free award transaction slot in its API process",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
AWARD_TRANSACTION = Histogram(
    "leaderboard_award_transaction_seconds",
    "Duration of one award transaction (a batch): statement, commit and synchronous standby",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
UNCERTAIN = Counter(
    "leaderboard_uncertain_completions_total",
    "Completions whose award failed with an unknown outcome, by what PostgreSQL showed later",
    ["outcome"],
)
REBUILDS = Counter(
    "leaderboard_ranking_rebuilds_total",
    "Rebuilds of the Redis ranking from PostgreSQL",
    ["result"],
)
REPAIRED = Counter(
    "leaderboard_ranking_repaired_total",
    "Ranking entries PostgreSQL had and Redis lacked (or held lower), recorded by a repair",
    ["board", "via"],
)
RECONCILED = Counter(
    "leaderboard_ranking_reconciled_completions_total",
    "Completions the reconciliation checked against the Redis rankings",
)
RECONCILE_BEHIND = Gauge(
    "leaderboard_ranking_reconcile_behind",
    "Completions old enough to check that the last reconciliation round left for the next",
)
DB_UNAVAILABLE = Counter(
    "leaderboard_db_unavailable_total", "Requests answered 503 because PostgreSQL was unavailable"
)
POOL_SIZE = Gauge("leaderboard_db_pool_connections", "Open PostgreSQL connections in the pool")
POOL_IDLE = Gauge("leaderboard_db_pool_idle_connections", "Idle PostgreSQL connections")


# Known label values exist at 0 from the start: a dashboard shows 0, not "No data", and the
# first event is an increase that rate() and increase() see (a series born at 1 has none).
for _backend in ("redis", "local"):
    RATE_LIMITED.labels(_backend)
for _operation in ("ratelimit", "record", "top", "user"):
    REDIS_FALLBACKS.labels(_operation)
for _outcome in ("committed", "absent"):
    UNCERTAIN.labels(_outcome)
for _result in ("done", "elsewhere", "superseded", "failed"):
    REBUILDS.labels(_result)
