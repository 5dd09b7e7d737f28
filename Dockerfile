# One image for the three components: `leaderboard api | broadcaster | operator`.
# Build:  make image   (or: podman|docker build -t REGISTRY/leaderboard:TAG .; see README)
ARG PYTHON_VERSION=3.11

# -- build: a virtualenv with the pinned dependencies first (cached while only the source
#    changes), then the package, then bytecode compiled once (the runtime root is read-only)
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
# The dependencies alone, read from pyproject.toml. (A stub package used to stand in for the
# source here: its build/ folder was then reused by the real install, and the image shipped
# the empty stub instead of the code.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt
COPY README.md ./
COPY leaderboard ./leaderboard
# Nothing was built in /src before this line, so the wheel holds exactly the copied source.
# unchecked-hash: the bytecode is used whatever the files' times (COPY may change them).
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheel . \
    && pip install --no-cache-dir --no-deps /tmp/wheel/*.whl \
    && pip uninstall --yes pip setuptools \
    && python -m compileall -q --invalidation-mode unchecked-hash /opt/venv

# -- runtime: the same Python, the virtualenv, a numeric non-root user that can write nothing
#    but /tmp (Debian's base leaves /var/tmp and /run/lock world-writable)
FROM python:${PYTHON_VERSION}-slim-bookworm
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LEADERBOARD_ENV=prod \
    LEADERBOARD_HOST=0.0.0.0 \
    LEADERBOARD_RUN_DIR=/tmp/leaderboard
RUN find / -xdev -path /tmp -prune -o \( -type d -o -type f \) -perm -0002 -exec chmod o-w {} +
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000 8001 8002 8003
ENTRYPOINT ["leaderboard"]
CMD ["api"]
