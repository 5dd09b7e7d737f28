"""Prometheus metrics of a broadcaster process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("leaderboard_ws_connections", "Open WebSocket connections")
MAX_CONNECTIONS = Gauge("leaderboard_ws_max_connections", "Connection limit of this process")
MESSAGES_SENT = Counter("leaderboard_ws_messages_sent_total", "WebSocket messages written")
BYTES_SENT = Counter("leaderboard_ws_bytes_sent_total", "WebSocket bytes written (frames)")
FANOUT_SECONDS = Histogram(
    "leaderboard_ws_fanout_seconds",
    "From receipt of an update to its write to the last connection",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
SLOW_CLIENTS_CLOSED = Counter(
    "leaderboard_ws_slow_clients_closed_total", "Clients closed for staying unwritable"
)
DEAD_PEERS = Counter("leaderboard_ws_dead_peers_total", "Clients dropped for missing heartbeats")
RESYNCS = Counter(
    "leaderboard_ws_resyncs_total", "Fresh snapshots sent after missing updates (Redis away)"
)
REJECTED = Counter("leaderboard_ws_rejected_total", "WebSocket connections refused", ["reason"])
REDIS_UP = Gauge("leaderboard_ws_redis_subscribed", "1 while subscribed to the updates channel")


# Known refusal reasons exist at 0 from the start (a dashboard shows 0, not "No data").
for _reason in ("missing_token", "invalid_token", "token_expired", "bad_handshake", "full",
                "draining"):  # fmt: skip
    REJECTED.labels(_reason)
