"""Real-time leaderboard platform: API, broadcaster, failover operator."""

__version__ = "0.1.0"
