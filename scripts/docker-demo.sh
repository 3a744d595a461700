#!/bin/sh
# The Docker image's command: the demo gates (overfit, which re-runs stale data and shapes, then
# full) and the status table; exits with the gates' code (0 when both passed).
#
# As PID 1 this shell gets `docker stop`'s SIGTERM (and Ctrl-C's SIGINT under `docker run -it`);
# the trap passes it on to the running gate as SIGTERM, which records its run as interrupted.
# Without that the gate would be killed after the grace period and its record left "running":
# a later container, on another hostname, cannot tell that the process died. (SIGTERM, not
# SIGINT: a shell without job control starts background commands with SIGINT ignored.)
#   scripts/docker-demo.sh [PAPER]        PAPER: bimpm by default
paper=${1:-bimpm}
gate=

trap '[ -n "$gate" ] && kill -TERM "$gate" 2>/dev/null' TERM INT

run_gate() {  # in the background, so that the trap runs while we wait
    repro stage "$1" --paper "$paper" &
    gate=$!
    while :; do
        wait "$gate"
        code=$?
        kill -0 "$gate" 2>/dev/null || break  # still running: the wait was cut short by a signal
    done
    gate=
    return "$code"
}

run_gate overfit && run_gate full
code=$?
repro status --paper "$paper"
exit "$code"
