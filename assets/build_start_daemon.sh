#!/bin/sh
# In-guest installer: make CRIU usable, then start the cedana daemon when
# /cedana exists.  Safe to run again: a working CRIU is not rebuilt and a
# running daemon is not restarted.
set -eu
BUILT=/tmp/criu/criu
PATH=$BUILT:$PATH
export PATH
DAEMON_PID=/run/cedana-daemon.pid

say() { echo "build_start_daemon: $*"; }
die() { echo "build_start_daemon: error: $*" >&2; exit 1; }
criu_works() { command -v criu >/dev/null 2>&1 && criu --version >/dev/null 2>&1; }

build_criu() {
    say "no usable CRIU; building it from /criu into /tmp/criu"
    rm -rf /tmp/criu
    cp -a /criu /tmp/criu
    make -C /tmp/criu -j"$(nproc)" >/tmp/criu-build.log 2>&1 ||
        die "CRIU build failed (log: /tmp/criu-build.log)"
}

ensure_criu() {
    if criu_works; then
        say "CRIU ready: $(criu --version | head -n 1) ($(command -v criu))"
        return
    fi
    [ -d /criu ] || die "no usable CRIU: install criu in the image or put its source tree at /criu"
    build_criu
    criu_works || die "CRIU built in /tmp/criu does not run"
    say "CRIU built: $(criu --version | head -n 1)"
}

start_cedana() {
    if [ ! -x /cedana ]; then
        say "no /cedana: daemon not started (the criu engine needs none)"
        return
    fi
    if [ -s "$DAEMON_PID" ] && kill -0 "$(cat "$DAEMON_PID")" 2>/dev/null; then
        say "cedana daemon already running (pid $(cat "$DAEMON_PID"))"
        return
    fi
    cd /
    setsid /cedana daemon start -k --config-dir tmp/ \
        </dev/null >/tmp/cedana-daemon.log 2>&1 &
    echo $! >"$DAEMON_PID"
    sleep 1
    kill -0 "$(cat "$DAEMON_PID")" 2>/dev/null ||
        die "cedana daemon exited at start (log: /tmp/cedana-daemon.log)"
    say "cedana daemon started (pid $(cat "$DAEMON_PID"))"
}

ensure_criu
start_cedana
