#!/usr/bin/env bash
# `ray up` for real, with this machine as its own on-prem cluster (docs/cluster.md, "Loopback run").
#
#   scripts/ray_up_loopback.sh [OUT]        # OUT (default runs/ray_up_loopback): transcript, table, pids
#
# Starts an SSH server on 127.0.0.1 (Debian's openssh-server, installed if missing) that lets one node user
# in with a fresh key, then runs the real commands against a copy of cluster-onprem.yaml whose head_ip is
# 127.0.0.1: `ray up -y`, `ray exec 'ray status'`, `ray submit` of experiments/opanas_ea.py --smoke,
# `ray rsync-down` of its result table, `ray down -y`. Ends with one verdict line. Exit status: 0 passed,
# 1 a step failed, 77 this machine cannot host the run (not root, or no SSH server can be installed).
# Whatever it started (the SSH server, the cluster) is stopped on every exit, Ctrl-C included.
#
# Why only a head: every node runs `ray stop` before `ray start`, which stops all Ray processes of the node
# user on that host; a worker on 127.0.0.2 is the same host and would stop the head. The node user is not
# the caller (default `raynas`, the file's ssh_user), so `ray stop` on the node cannot touch Ray sessions
# the caller runs on this machine.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$REPO/runs/ray_up_loopback}" && cd "${1:-$REPO/runs/ray_up_loopback}" && pwd)"
NODE_USER="${RAYNAS_LOOPBACK_USER:-raynas}"
SSH_PORT="${RAYNAS_LOOPBACK_SSH_PORT:-2222}"
RAY="${RAY:-ray}"
WORK="$(mktemp -d /tmp/raynas-loopback.XXXXXX)" # keys, sshd config and log, the cluster copy
CFG="$WORK/cluster-loopback.yaml"
TRANSCRIPT="$OUT/transcript.md"
RAW="$OUT/output.log"
PIDS="$OUT/pids.txt"
STARTED=$(date +%s)
CLUSTER_UP=""
FAILED=""

say() { echo "[ray_up_loopback] $*"; }
unavailable() { say "cannot run here: $*"; echo "ray up loopback: SKIPPED ($*)"; exit 77; }

# One step: the command as typed, its time and exit status in the transcript; its output in output.log.
step() {
    local name="$1"
    shift
    local t0 ms rc
    say "$name: $*"
    echo "### $name: \$ $*" >>"$RAW"
    t0=$(date +%s%N)
    "$@" >>"$RAW" 2>&1
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    local typed="$*"
    typed="${typed/#$RAY/ray}"
    printf '| %s | `%s` | %d.%d | %d |\n' "$name" "${typed//$CFG/cluster-loopback.yaml}" \
        $((ms / 1000)) $((ms % 1000 / 100)) "$rc" >>"$TRANSCRIPT"
    if [ "$rc" -ne 0 ]; then
        FAILED="$name (exit $rc; see $RAW)"
        exit 1
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$CLUSTER_UP" ]; then
        say "tearing the cluster down"
        (cd "$REPO" && timeout 300 "$RAY" down -y "$CFG") >>"$RAW" 2>&1 || FAILED="${FAILED:-ray down}"
    fi
    # Whatever Ray left of the node user's (nothing after a clean `ray down`) is a failure, then stopped.
    if pgrep -u "$NODE_USER" -f "raylet|gcs_server|ray::" >/dev/null 2>&1; then
        FAILED="${FAILED:-Ray processes left after ray down}"
        pkill -KILL -u "$NODE_USER" -f "raylet|gcs_server|ray::|dashboard|monitor" 2>/dev/null
    fi
    if [ -f "$WORK/sshd.pid" ]; then
        local sshd_pid
        sshd_pid="$(cat "$WORK/sshd.pid")"
        pkill -TERM -P "$sshd_pid" 2>/dev/null # its open sessions
        kill -TERM "$sshd_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$sshd_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$sshd_pid" 2>/dev/null && kill -KILL "$sshd_pid"
    fi
    [ -n "${NODE_HOME:-}" ] && sed -i "/raynas-loopback-$$/d" "$NODE_HOME/.ssh/authorized_keys" 2>/dev/null
    rm -rf "$WORK"
    local total=$(($(date +%s) - STARTED))
    if [ "$rc" -eq 77 ]; then
        exit 77
    elif [ -z "$FAILED" ] && [ "$rc" -eq 0 ]; then
        echo "ray up loopback: PASSED in ${total} s (transcript: $TRANSCRIPT)"
        exit 0
    else
        echo "ray up loopback: FAILED at ${FAILED:-an interruption} after ${total} s (transcript: $TRANSCRIPT)"
        exit 1
    fi
}
trap cleanup EXIT
trap 'FAILED="${FAILED:-interrupted}"; exit 130' INT TERM

# --- this machine as a node --------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || unavailable "needs root to install and start an SSH server and add the node user"
command -v "$RAY" >/dev/null || unavailable "no 'ray' command (install raynas in the active environment)"
if [ ! -x /usr/sbin/sshd ] || ! command -v rsync >/dev/null || ! command -v nc >/dev/null; then
    say "installing openssh-server, rsync and netcat (Debian packages)"
    # policy-rc.d stops the package from starting a system-wide sshd; ours listens on loopback only
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        openssh-server rsync netcat-openbsd; } >>"$RAW" 2>&1
    installed=$?
    rm -f /usr/sbin/policy-rc.d
    [ "$installed" -eq 0 ] || unavailable "apt-get could not install openssh-server (see $RAW)"
fi
if ss -ltn | grep -qE "[:.](6379|$SSH_PORT)\s"; then
    say "port 6379 (Ray's head) or $SSH_PORT (the SSH server) is taken on this machine; free it or set RAYNAS_LOOPBACK_SSH_PORT"
    FAILED="ports in use"
    exit 1
fi
if pgrep -u "$NODE_USER" -f "raylet|gcs_server" >/dev/null 2>&1; then
    say "user $NODE_USER already runs Ray on this machine; stop it first (ray stop as $NODE_USER)"
    FAILED="Ray already running as $NODE_USER"
    exit 1
fi

: >"$RAW"
{
    echo "| step | command | seconds | exit |"
    echo "|---|---|---|---|"
} >"$TRANSCRIPT"
: >"$PIDS"

id "$NODE_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --password '*' "$NODE_USER"
NODE_HOME="$(getent passwd "$NODE_USER" | cut -d: -f6)"
# The node's own set-up, as an administrator would do it once: the packages this machine installs from
# (its pip configuration), and a Ray temp dir of the node user's (/tmp/ray may belong to another user here).
if [ -f "$HOME/.config/pip/pip.conf" ]; then
    install -D -m 644 -o "$NODE_USER" "$HOME/.config/pip/pip.conf" "$NODE_HOME/.config/pip/pip.conf"
fi
install -d -o "$NODE_USER" "$NODE_HOME/tmp" "$NODE_HOME/.ssh"
grep -q "RAY_TMPDIR" "$NODE_HOME/.bashrc" 2>/dev/null ||
    sed -i '1i export RAY_TMPDIR="$HOME/tmp"  # this node shares /tmp with other Ray users' "$NODE_HOME/.bashrc"

ssh-keygen -q -t ed25519 -N '' -C "raynas-loopback-$$" -f "$WORK/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
cat "$WORK/id_ed25519.pub" >>"$NODE_HOME/.ssh/authorized_keys"
chown -R "$NODE_USER" "$NODE_HOME/.ssh" "$NODE_HOME/.bashrc"
chmod 700 "$NODE_HOME/.ssh" && chmod 600 "$NODE_HOME/.ssh/authorized_keys"

cat >"$WORK/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $WORK/host_key
PidFile $WORK/sshd.pid
AllowUsers $NODE_USER
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
MaxStartups 50
Subsystem sftp internal-sftp
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -f "$WORK/sshd_config" -E "$WORK/sshd.log" || { FAILED="sshd did not start"; exit 1; }
for _ in $(seq 50); do [ -s "$WORK/sshd.pid" ] && break; sleep 0.1; done
echo "sshd $(cat "$WORK/sshd.pid")" >>"$PIDS"

# --- the cluster file, pointed at loopback -------------------------------------------------------------
# Only the addresses and credentials change; setup and start commands are the file's own.
"$(dirname "$(command -v "$RAY")")/python" - "$REPO/cluster-onprem.yaml" "$CFG" <<EOF || exit 1
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
config["auth"] = {
    "ssh_user": "$NODE_USER",
    "ssh_private_key": "$WORK/id_ed25519",
    "ssh_proxy_command": "nc 127.0.0.1 $SSH_PORT",
}
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
EOF

REMOTE_OUT="$NODE_HOME/raynas-loopback"
cd "$REPO" || exit 1
CLUSTER_UP=1
step "ray up" "$RAY" up -y --no-config-cache "$CFG"
pgrep -u "$NODE_USER" -f "raylet|gcs_server" | sed 's/^/ray /' >>"$PIDS"
step "ray status" "$RAY" exec "$CFG" "ray status"
# down and up again: the second `ray up` syncs and runs every setup command on a node already prepared
step "ray down" "$RAY" down -y "$CFG"
step "ray up (prepared node)" "$RAY" up -y --no-config-cache "$CFG"
pgrep -u "$NODE_USER" -f "raylet|gcs_server" | sed 's/^/ray /' >>"$PIDS"
step "fresh output folder" "$RAY" exec "$CFG" "rm -rf $REMOTE_OUT"
step "submit main job" "$RAY" submit "$CFG" experiments/opanas_ea.py -- --smoke --address auto --out "$REMOTE_OUT"
step "rsync-down table" "$RAY" rsync-down "$CFG" "$REMOTE_OUT/search/evolution/results.csv" "$OUT/results.csv"
step "ray down" "$RAY" down -y "$CFG"
CLUSTER_UP=""
rows=$(($(wc -l <"$OUT/results.csv") - 1))
[ "$rows" -ge 1 ] || { FAILED="the fetched results.csv has no rows"; exit 1; }
say "fetched $OUT/results.csv: $rows candidates of the smoke search"
