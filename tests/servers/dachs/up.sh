#!/usr/bin/env bash
# up.sh - a local GAVO DaCHS TAP + Simple Cone Search server on loopback,
# serving xmine's simulated CSC 2.1, 4XMM and Chandra observation rows
# (adapted from ../shared/tools/dachs/up.sh; see README.md there for pitfalls).
#
#   up.sh [up]     install what is missing (Debian 12 packages), start
#                  PostgreSQL and DaCHS, (re)import every resource folder
#                  next to this script whose files changed, wait until TAP
#                  answers, print the URLs.  Idempotent; a no-op re-run
#                  takes under a second.
#   up.sh stop     stop DaCHS, and PostgreSQL if up.sh started it.
#   up.sh status   say what runs; exit 0 if TAP answers, 3 if not.
#   up.sh urls     print the URLs only.
#
# A resource folder is any folder here holding q.rd (RD id <folder>/q) and
# the data files its <sources pattern="..."> names, relative to the folder.
# Missing CSVs are made with make_data.py (xmine's simulator).
#
# Environment: DACHS_PORT (default 8080), DACHS_UP_TIMEOUT (seconds to wait
# for TAP, default 120), DACHS_STOP_PG (stop: 1 always stops PostgreSQL,
# 0 never; default: only if up.sh started it).
#
# Needs root (apt-get, pg_ctlcluster, /var/gavo), no systemd.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${DACHS_PORT:-8080}"
BASE="http://localhost:${PORT}"
TIMEOUT="${DACHS_UP_TIMEOUT:-120}"
PGVER=15
PGCLUSTER=main
PG_PKGS=(postgresql-15 postgresql-15-pgsphere postgresql-15-q3c)
DACHS_PKG=gavodachs2-server
GAVO_ROOT=/var/gavo
STATE="$GAVO_ROOT/state"
PG_MARK=/run/dachs-up.started-postgres   # gone after a reboot, like the server
LOGDIR=/tmp/dachs-up-logs
APT_UPDATED=0
CHANGED=0
T0=$(date +%s%N)

log() { printf '[up.sh +%ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { printf '[up.sh] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '%d.%01d' $((ms / 1000)) $((ms % 1000 / 100)); }

need_root() {
    [ "$(id -u)" = 0 ] || die "run as root (apt-get, pg_ctlcluster and $GAVO_ROOT need it)"
}

# --- packages ----------------------------------------------------------------
pkg_state() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true; }
pkg_ok() { [ "$(pkg_state "$1")" = installed ]; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >"$LOGDIR/apt-update.log" 2>&1 \
            || { tail -5 "$LOGDIR/apt-update.log" >&2; die "apt-get update failed (log: $LOGDIR/apt-update.log)"; }
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    # DPkg::Lock::Timeout: wait for another apt/dpkg instead of failing at once.
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" \
        >>"$LOGDIR/apt-install.log" 2>&1
}

ensure_packages() {
    local missing=() p
    for p in "${PG_PKGS[@]}"; do pkg_ok "$p" || missing+=("$p"); done
    command -v curl >/dev/null || missing+=(curl)   # the readiness probe uses it
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}" \
            || { tail -20 "$LOGDIR/apt-install.log" >&2; die "installing ${missing[*]} failed (log: $LOGDIR/apt-install.log)"; }
    fi
    # gavodachs2-server's postinst creates the gavo database and runs
    # 'dachs init', so PostgreSQL must already be running here.
    start_postgres
    if [ -n "$(pkg_state "$DACHS_PKG")" ] && ! pkg_ok "$DACHS_PKG"; then
        log "$DACHS_PKG is '$(pkg_state "$DACHS_PKG")': dpkg --configure -a"
        dpkg --configure -a >"$LOGDIR/dpkg-configure.log" 2>&1 || true
    fi
    if ! pkg_ok "$DACHS_PKG"; then
        write_gavo_rc   # before the postinst, which may start the server
        if ! apt_install "$DACHS_PKG"; then
            log "install of $DACHS_PKG failed; starting PostgreSQL and retrying dpkg --configure -a"
            start_postgres
            dpkg --configure -a >"$LOGDIR/dpkg-configure.log" 2>&1 \
                || { tail -20 "$LOGDIR/apt-install.log" "$LOGDIR/dpkg-configure.log" >&2
                     die "$DACHS_PKG did not install (logs: $LOGDIR/)"; }
        fi
    fi
    pkg_ok "$DACHS_PKG" || die "$DACHS_PKG is '$(pkg_state "$DACHS_PKG")' after install (logs: $LOGDIR/)"
    [ -f "$GAVO_ROOT/etc/dsn" ] || {
        log "no $GAVO_ROOT/etc/dsn: running dachs init as dachsroot"
        (cd / && su dachsroot -s /bin/sh -c "dachs init") >"$LOGDIR/dachs-init.log" 2>&1 \
            || { tail -20 "$LOGDIR/dachs-init.log" >&2; die "dachs init failed"; }
    }
}

# --- PostgreSQL ----------------------------------------------------------------
pg_status() {   # online / down / missing
    local s
    s=$(pg_lsclusters -h 2>/dev/null | awk -v v="$PGVER" -v c="$PGCLUSTER" '$1==v && $2==c {print $4}')
    echo "${s:-missing}"
}

start_postgres() {
    local st
    st=$(pg_status)
    if [ "$st" = missing ]; then
        command -v pg_createcluster >/dev/null || die "pg_createcluster not found (postgresql-common missing?)"
        log "creating PostgreSQL cluster $PGVER/$PGCLUSTER"
        pg_createcluster "$PGVER" "$PGCLUSTER" >"$LOGDIR/pg-create.log" 2>&1 \
            || { tail "$LOGDIR/pg-create.log" >&2; die "pg_createcluster failed"; }
        st=down
    fi
    if [ "$st" != online ]; then
        log "starting PostgreSQL $PGVER/$PGCLUSTER"
        pg_ctlcluster "$PGVER" "$PGCLUSTER" start </dev/null >"$LOGDIR/pg-start.log" 2>&1 \
            || die "pg_ctlcluster $PGVER $PGCLUSTER start failed; see /var/log/postgresql/postgresql-$PGVER-$PGCLUSTER.log"
        touch "$PG_MARK" 2>/dev/null || true
    fi
    local i
    for i in $(seq 1 60); do
        pg_isready -q -h localhost -p "$(pg_port)" && return 0
        sleep 0.5
    done
    die "PostgreSQL does not accept connections (log: /var/log/postgresql/postgresql-$PGVER-$PGCLUSTER.log)"
}

pg_port() { pg_lsclusters -h 2>/dev/null | awk -v v="$PGVER" -v c="$PGCLUSTER" '$1==v && $2==c {print $3}'; }

# --- DaCHS config, import, server ---------------------------------------------
write_gavo_rc() {
    local want
    want="# written by up.sh (xmine tests/servers/dachs); edits are overwritten
[web]
bindAddress: 127.0.0.1
serverPort: $PORT
serverURL: $BASE
"
    if [ "$(cat /etc/gavo.rc 2>/dev/null || true)" != "$(printf '%s' "$want")" ]; then
        printf '%s' "$want" >/etc/gavo.rc
        log "wrote /etc/gavo.rc (port $PORT)"
        CHANGED=1
    fi
}

resources() {   # folders next to this script that hold a q.rd
    local d
    for d in "$HERE"/*/; do
        if [ -f "$d/q.rd" ]; then basename "$d"; fi
    done
}

rd_attr() { grep -o "$2=\"[^\"]*\"" "$1" | head -1 | cut -d'"' -f2; }

ensure_data() {   # every <sources pattern> of the RD must match a file
    local r=$1 pat made=0
    for pat in $(grep -o '<sources pattern="[^"]*"' "$HERE/$r/q.rd" | cut -d'"' -f2); do
        if ! compgen -G "$HERE/$r/$pat" >/dev/null; then
            if [ "$made" = 0 ] && [ -f "$HERE/make_data.py" ]; then
                log "$r: no file matches $pat; running make_data.py with ${XMINE_PYTHON:-python3}"
                "${XMINE_PYTHON:-python3}" "$HERE/make_data.py" --only-missing >&2 \
                    || die "make_data.py failed (it needs xmine installed: pip install -e .; or set XMINE_PYTHON)"
                made=1
            fi
            compgen -G "$HERE/$r/$pat" >/dev/null || die "$r/q.rd: no data file matches $HERE/$r/$pat"
        fi
    done
}

tree_hash() {
    (cd "$HERE/$1" && find . -type f ! -name '*~' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
}

imported() {   # does the database know tables from this RD?
    local n
    n=$(cd / && su postgres -c "psql -tAq -d gavo -c \"SELECT count(*) FROM dc.tablemeta WHERE sourcerd='$1/q'\"" 2>/dev/null || echo 0)
    [ "${n:-0}" -gt 0 ]
}

import_resources() {
    local r h stamp
    for r in $(resources); do
        ensure_data "$r"
        h=$(tree_hash "$r")
        # the stamp lives in the copy under inputs/, so a new copy needs a new import
        stamp="$GAVO_ROOT/inputs/$r/.up.sh.imported.sha256"
        if [ "$h" = "$(cat "$stamp" 2>/dev/null || true)" ] && imported "$r"; then
            continue
        fi
        log "importing $r/q"
        rm -rf "${GAVO_ROOT:?}/inputs/$r"
        cp -r "$HERE/$r" "$GAVO_ROOT/inputs/$r"
        chown -R dachsroot:gavo "$GAVO_ROOT/inputs/$r"
        # DaCHS only loads RDs below its inputsDir (/var/gavo/inputs), hence the copy.
        if ! (cd / && dachs imp "$r/q") >"$LOGDIR/imp-$r.log" 2>&1; then
            tail -20 "$LOGDIR/imp-$r.log" >&2
            die "dachs imp $r/q failed (log: $LOGDIR/imp-$r.log)"
        fi
        grep -i 'warning' "$LOGDIR/imp-$r.log" >&2 || true
        echo "$h" >"$stamp"
        CHANGED=1
    done
}

dachs_pid() {
    local p
    p=$(cat "$STATE/web.pid" 2>/dev/null || true)
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
    return 0
}

start_dachs() {
    if [ -n "$(dachs_pid)" ]; then
        if [ "$CHANGED" = 1 ]; then
            log "restarting DaCHS (config or data changed)"
            (cd / && dachs serve restart) </dev/null >"$LOGDIR/serve.log" 2>&1 \
                || { tail "$LOGDIR/serve.log" >&2; die "dachs serve restart failed"; }
        fi
    else
        log "starting DaCHS on $BASE"
        (cd / && dachs serve start) </dev/null >"$LOGDIR/serve.log" 2>&1 \
            || { tail "$LOGDIR/serve.log" >&2; die "dachs serve start failed (log: $GAVO_ROOT/logs/server.stderr)"; }
    fi
}

tap_ok() {   # a real ADQL query through /tap/sync
    curl -sf -m 10 "$BASE/tap/sync" -d LANG=ADQL -d REQUEST=doQuery \
        --data-urlencode "QUERY=SELECT TOP 1 table_name FROM TAP_SCHEMA.tables" 2>/dev/null \
        | grep -q 'name="QUERY_STATUS" value="OK"'
}

server_logs() {
    tail -n 8 "$GAVO_ROOT/logs/server.stderr" "$GAVO_ROOT/logs/dcErrors" >&2 2>/dev/null || true
}

wait_tap() {
    local start now restarted=0
    start=$(date +%s)
    until tap_ok; do
        now=$(date +%s)
        if [ -z "$(dachs_pid)" ]; then
            server_logs
            if ss -ltn 2>/dev/null | grep -q "127.0.0.1:$PORT \|\*:$PORT \|0.0.0.0:$PORT \|\[::\]:$PORT "; then
                die "DaCHS is not running and something else listens on port $PORT (set DACHS_PORT)"
            fi
            die "DaCHS died after start (logs: $GAVO_ROOT/logs/server.stderr, dcErrors, web.log)"
        fi
        if [ "$restarted" = 0 ] && [ $((now - start)) -ge 20 ]; then
            log "TAP silent for 20 s; restarting DaCHS once"
            (cd / && dachs serve restart) </dev/null >"$LOGDIR/serve.log" 2>&1 || true
            restarted=1
        fi
        if [ $((now - start)) -ge "$TIMEOUT" ]; then
            server_logs
            die "TAP at $BASE/tap did not answer within ${TIMEOUT}s (logs: $GAVO_ROOT/logs/)"
        fi
        sleep 0.3
    done
}

print_urls() {
    local r schema svc
    echo "TAP: $BASE/tap"
    for r in $(resources); do
        schema=$(rd_attr "$HERE/$r/q.rd" schema)
        for svc in $(grep -o '<service id="[^"]*"[^>]*scs\.xml' "$HERE/$r/q.rd" | cut -d'"' -f2); do
            echo "SCS: $BASE/$r/q/$svc/scs.xml  (schema $schema)"
        done
    done
}

# --- commands ------------------------------------------------------------------
cmd_up() {
    need_root
    mkdir -p "$LOGDIR"
    ensure_packages
    start_postgres
    write_gavo_rc
    import_resources
    start_dachs
    wait_tap
    print_urls
    log "ready in $(elapsed) s"
}

cmd_stop() {
    need_root
    local p i
    p=$(dachs_pid)
    if [ -n "$p" ]; then
        log "stopping DaCHS (pid $p)"
        (cd / && dachs serve stop) >/dev/null 2>&1 || true
        for i in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
    else
        log "DaCHS is not running"
    fi
    if [ "$(pg_status)" = online ]; then
        if [ "${DACHS_STOP_PG:-}" = 1 ] || { [ "${DACHS_STOP_PG:-}" != 0 ] && [ -f "$PG_MARK" ]; }; then
            log "stopping PostgreSQL $PGVER/$PGCLUSTER"
            pg_ctlcluster "$PGVER" "$PGCLUSTER" stop
            rm -f "$PG_MARK"
        else
            log "leaving PostgreSQL running (up.sh did not start it; DACHS_STOP_PG=1 stops it)"
        fi
    fi
    log "stopped in $(elapsed) s"
}

cmd_status() {
    local p rc=0
    echo "postgresql $PGVER/$PGCLUSTER: $(pg_status)"
    if pkg_ok "$DACHS_PKG"; then
        p=$(dachs_pid)
        if [ -n "$p" ]; then p="running, pid $p"; else p="not running"; fi
        echo "dachs: $p ($DACHS_PKG $(dpkg-query -W -f='${Version}' "$DACHS_PKG"))"
    else
        echo "dachs: $DACHS_PKG not installed"
    fi
    if tap_ok; then
        echo "tap: answers at $BASE/tap"
        print_urls
    else
        echo "tap: no answer at $BASE/tap"
        rc=3
    fi
    return $rc
}

case "${1:-up}" in
    up|start) cmd_up ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    urls) print_urls ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | cut -c3- ;;
    *) die "unknown command '$1' (use: up | stop | status | urls)" ;;
esac
