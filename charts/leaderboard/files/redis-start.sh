#!/bin/bash
# Starts Redis in the chart's pod. With TLS (TLS_DIR set) it also watches the certificate
# files: Redis reads them once, at start, and the kubelet rewrites them when the Secret is
# renewed (cert-manager); CONFIG SET of the same paths makes Redis load them again, with no
# restart and no connection dropped (Redis 6.2+). Without it a renewed certificate would be
# served only after a restart, and a new CA would fail the probes, which verify against it.
#
#   redis-start.sh [redis-server options...]   Redis, and the watcher when TLS_DIR is set
#   redis-start.sh watch-tls                   the watcher alone (what the tests run)
#
# Environment: TLS_DIR (tls.crt, tls.key, ca.crt), REDIS_PORT (6379), CHECK_EVERY_S (10),
# REDISCLI_AUTH (the administrator's password, for CONFIG SET).
set -euo pipefail

fingerprint() { cat "$TLS_DIR/tls.crt" "$TLS_DIR/tls.key" "$TLS_DIR/ca.crt" | sha256sum; }

watch_tls() {
    # Nothing counts as loaded at first: the files may have changed between Redis reading them
    # and this reading them, so the first round reloads once (retrying until Redis answers).
    local loaded="" now answer
    while true; do
        sleep "${CHECK_EVERY_S:-10}"
        now=$(fingerprint) || continue  # mid-rewrite: next time
        if [[ "$now" == "$loaded" ]]; then continue; fi
        # --insecure: until it reloads, Redis presents the old certificate, which a new CA
        # does not verify; this is the pod's own loopback.
        answer=$(redis-cli -h 127.0.0.1 -p "${REDIS_PORT:-6379}" --tls --insecure CONFIG SET \
            tls-cert-file "$TLS_DIR/tls.crt" tls-key-file "$TLS_DIR/tls.key" \
            tls-ca-cert-file "$TLS_DIR/ca.crt" 2>&1) || true
        if [[ "$answer" == OK ]]; then
            echo "redis-start: Redis loaded its certificate files" >&2
            loaded=$now
        else
            echo "redis-start: reloading the certificate failed (retrying): $answer" >&2
        fi
    done
}

case "${1:-}" in
    watch-tls)
        : "${TLS_DIR:?}"
        watch_tls
        ;;
    *)
        if [[ -n "${TLS_DIR:-}" ]]; then
            "$BASH" "$0" watch-tls &
        fi
        exec redis-server "$@"
        ;;
esac
