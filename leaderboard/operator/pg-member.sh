#!/bin/bash
# Role-aware start of one PostgreSQL member, shared by both shells of the operator:
# the Kubernetes pods run `pg-member.sh start` (official postgres image, from a ConfigMap) and
# the local stack runs `pg-member.sh prepare` to build and rejoin its standbys, so the same
# lines are exercised by the local drills and tests.
#
# The rule: a member never makes itself primary, except when creating a brand-new cluster.
#   - another member answers as primary at PRIMARY_HOST:PRIMARY_PORT:
#       no data yet   -> pg_basebackup from it;
#       data          -> pg_rewind onto it (a former primary comes back as a replica; a replica
#                        that is already on its history gets "no rewind required"), falling back
#                        to a fresh pg_basebackup when rewind fails;
#       then standby.signal + primary_conninfo pointing at PRIMARY_HOST.
#   - nobody else answers as primary:
#       no data and BOOTSTRAP=primary -> initdb (the first member of a new cluster);
#       no data otherwise             -> exit 75 (EX_TEMPFAIL: nothing to clone yet, retry);
#       data                          -> start as a standby of PRIMARY_HOST and let the operator
#                                        decide (it promotes the member it recorded as primary,
#                                        which holds every acknowledged write).
#
# Environment: PG_TLS (on: TLS-only pg_hba.conf), PGSSLMODE and PGSSLROOTCERT (TLS to the primary, e.g. verify-full/verify-ca),
# PGDATA, MEMBER_NAME (its application_name and cluster_name), PRIMARY_HOST,
# PRIMARY_PORT, PGPASSWORD (the superuser's), optional PGBIN (folder of the server binaries),
# BOOTSTRAP (primary on the one member that may initdb; or BOOTSTRAP_MEMBER names it), CLUSTER_CONF (file appended to
# postgresql.conf by initdb), PGPORT (the port this member listens on, for `start`), and for
# `stop` (the preStop hook) PGSOCKET (its socket folder) and STOP_WAIT_S.
set -euo pipefail

: "${PGDATA:?}" "${MEMBER_NAME:?}" "${PRIMARY_HOST:?}" "${PRIMARY_PORT:=5432}" "${PGPASSWORD:?}"
if [[ -n "${PGBIN:-}" ]]; then PATH="$PGBIN:$PATH"; fi
export PGDATA PGPASSWORD PATH
EX_TEMPFAIL=75
# In Kubernetes the first pod of the StatefulSet is the one that may create the cluster.
if [[ -n "${BOOTSTRAP_MEMBER:-}" && "$BOOTSTRAP_MEMBER" == "$MEMBER_NAME" ]]; then
    BOOTSTRAP=primary
fi

log() { echo "pg-member[$MEMBER_NAME]: $*" >&2; }

primary_conninfo() {
    local tls=""
    # TLS mode: libpq's own variables; spelled out, because the walreceiver that later reads
    # primary_conninfo does not see this script's environment.
    if [[ -n "${PGSSLMODE:-}" ]]; then tls=" sslmode=$PGSSLMODE"; fi
    if [[ -n "${PGSSLROOTCERT:-}" ]]; then tls+=" sslrootcert=$PGSSLROOTCERT"; fi
    echo "host=$PRIMARY_HOST port=$PRIMARY_PORT user=postgres dbname=postgres connect_timeout=3$tls"
}

# "yes" when a member other than this one accepts writes at PRIMARY_HOST.
other_primary() {
    local answer
    answer=$(psql "$(primary_conninfo)" -XAtq -c \
        "SELECT pg_is_in_recovery()::text || ' ' || current_setting('cluster_name')" \
        2>/dev/null) || answer=""
    if [[ "$answer" == "false "* && "${answer#false }" != "$MEMBER_NAME" ]]; then
        echo yes
    else
        echo no
    fi
}

clone() {
    log "cloning from $PRIMARY_HOST:$PRIMARY_PORT (pg_basebackup)"
    rm -rf "$PGDATA"
    pg_basebackup -D "$PGDATA" -d "$(primary_conninfo) application_name=$MEMBER_NAME" \
        -X stream -c fast
}

rewind() {
    log "rewinding onto $PRIMARY_HOST:$PRIMARY_PORT (pg_rewind)"
    # pg_rewind refuses a data directory with a stale postmaster.pid of a killed server only
    # when that server still runs; it runs crash recovery itself (single-user) otherwise.
    if ! pg_rewind --target-pgdata="$PGDATA" --source-server="$(primary_conninfo)" >&2; then
        log "pg_rewind failed; cloning afresh instead"
        clone
    fi
}

follow() {
    touch "$PGDATA/standby.signal"
    sed -i '/^primary_conninfo/d' "$PGDATA/postgresql.auto.conf"
    local password=${PGPASSWORD//\'/\'\'}
    echo "primary_conninfo = '$(primary_conninfo) password=$password application_name=$MEMBER_NAME'" \
        >> "$PGDATA/postgresql.auto.conf"
}

bootstrap() {
    log "no primary answers and no data: creating a new cluster (initdb)"
    local pwfile
    pwfile=$(mktemp)
    printf '%s\n' "$PGPASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 --data-checksums >&2
    rm -f "$pwfile"
    if [[ -n "${CLUSTER_CONF:-}" ]]; then cat "$CLUSTER_CONF" >> "$PGDATA/postgresql.conf"; fi
    echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
}

# PG_TLS=on: every TCP rule of pg_hba.conf is `hostssl`, so a plaintext connection finds no
# rule and is refused; otherwise `host`. On every start: a cluster can be switched either way
# (replicas get the file from pg_basebackup and pg_rewind, so each member sets its own).
apply_hba() {
    local hba="$PGDATA/pg_hba.conf"
    [[ -f "$hba" ]] || return 0
    if [[ "${PG_TLS:-off}" == on ]]; then
        sed -i -E 's/^host([[:space:]])/hostssl\1/' "$hba"
    else
        sed -i -E 's/^hostssl([[:space:]])/host\1/' "$hba"
    fi
}

prepare() {
    local other
    other=$(other_primary)
    if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
        if [[ "$other" == yes ]]; then
            clone
            follow
        elif [[ "${BOOTSTRAP:-}" == primary ]]; then
            bootstrap
        else
            log "no data and no primary to clone from yet"
            return $EX_TEMPFAIL
        fi
    elif [[ "$other" == yes ]]; then
        rewind
        follow
    else
        log "no other member answers as primary: starting as a standby; the operator decides"
        follow
    fi
}

case "${1:-}" in
    prepare)
        prepare
        ;;
    start)
        shift
        # A separate process, so that `set -e` still applies inside prepare.
        until "$BASH" "$0" prepare; do
            status=$?
            if [[ $status -ne $EX_TEMPFAIL ]]; then exit $status; fi
            sleep 2
        done
        apply_hba
        exec postgres -D "$PGDATA" -c "cluster_name=$MEMBER_NAME" -c "port=${PGPORT:-5432}" "$@"
        ;;
    stop)
        # The pod's preStop hook. While this member is the primary, hold its shutdown (up to
        # STOP_WAIT_S) so that the operator, seeing the pod terminate, switches over to a
        # synchronous replica first; it ends with the operator's fence (a delete with no
        # grace). Then a fast shutdown, not the smart one SIGTERM would start (that waits for
        # every client session to end, i.e. for SIGKILL).
        deadline=$((SECONDS + ${STOP_WAIT_S:-20})) answer=""
        while (( SECONDS < deadline )); do
            answer=$(psql -h "${PGSOCKET:-/var/run/postgresql}" -p "${PGPORT:-5432}" -U postgres \
                -d postgres -XAtc "SELECT NOT pg_is_in_recovery()" 2>/dev/null || echo down)
            if [[ "$answer" != t ]]; then break; fi
            sleep 0.5
        done
        if [[ "$answer" == t ]]; then
            log "still the primary after ${STOP_WAIT_S:-20} s: stopping anyway"
        fi
        pg_ctl stop -D "$PGDATA" -m fast -w -t 60 >&2 || true
        ;;
    *)
        echo "usage: $0 prepare|start|stop [postgres options...]" >&2
        exit 64
        ;;
esac
