"""The score API (FastAPI): ``create_app`` builds it, ``leaderboard api`` serves it."""
