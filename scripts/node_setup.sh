#!/usr/bin/env bash
# Setup of one cluster node, run by `ray up` (setup_commands of cluster.yaml and cluster-onprem.yaml) on the
# checkout that file_mounts synced to ~/raynas-src.
#
# Builds the virtualenv ~/venv with the pinned stack and `pip install -e ~/raynas-src`, and records what it
# installed in ~/venv/.raynas-stack. A node whose record matches (same pins, same pyproject.toml) is left as
# it is, so a second `ray up` on a prepared node takes seconds and needs no network; code changes need no
# reinstall (the install is editable). Packages come from the node's own pip configuration (a package index
# or a local mirror); nothing else is downloaded.
set -euo pipefail

# The stack every node runs; `ray up` compares the cluster's Ray with the client's, so keep ray == yours.
STACK=("torch==2.14.1" "torchvision==0.29.1" "ray[default,tune,train]==2.60.0")
VENV="$HOME/venv"
CHECKOUT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

test -x "$VENV/bin/python" || python3 -m venv "$VENV"
# Ray runs every later command in a login shell; this puts the venv's python, pip and ray first on PATH.
grep -q "source ~/venv/bin/activate" ~/.bashrc || echo "source ~/venv/bin/activate" >>~/.bashrc

wanted="$(mktemp)"
trap 'rm -f "$wanted"' EXIT
{ printf '%s\n' "${STACK[@]}" "$CHECKOUT"; cat "$CHECKOUT/pyproject.toml"; } >"$wanted"  # a moved checkout is installed anew
if cmp -s "$wanted" "$VENV/.raynas-stack"; then
    echo "raynas node setup: ~/venv is up to date (${STACK[*]}, raynas from $CHECKOUT)"
    exit 0
fi
"$VENV/bin/python" -m pip install -U pip
"$VENV/bin/python" -m pip install "${STACK[@]}"
"$VENV/bin/python" -m pip install -e "$CHECKOUT"
cp "$wanted" "$VENV/.raynas-stack"
echo "raynas node setup: installed ${STACK[*]} and raynas from $CHECKOUT into ~/venv"
