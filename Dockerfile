# One image for the three components: `leaderboard api | broadcaster | operator`.
# Build:  docker build -t REGISTRY/leaderboard:TAG .   (see README, "Container image")
ARG PYTHON_VERSION=3.11

# -- build: a virtualenv with the dependencies first (cached while only the source changes),
#    then the package, then bytecode compiled once (the runtime root filesystem is read-only)
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
# A stub package lets pip resolve and install the pinned dependencies alone.
RUN mkdir leaderboard && touch leaderboard/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes leaderboard \
    && rm -rf leaderboard
COPY leaderboard ./leaderboard
RUN pip install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv

# -- runtime: the same Python, the virtualenv, a numeric non-root user
FROM python:${PYTHON_VERSION}-slim-bookworm
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LEADERBOARD_ENV=prod \
    LEADERBOARD_HOST=0.0.0.0 \
    LEADERBOARD_RUN_DIR=/tmp/leaderboard
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000 8001 8002 8003
ENTRYPOINT ["leaderboard"]
CMD ["api"]
