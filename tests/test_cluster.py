"""Cluster configs and a real multi-node Ray cluster.

Fast (default): ``cluster.yaml`` and ``cluster-onprem.yaml`` pass the checks ``ray up`` runs before it
contacts any provider (``ray.autoscaler._private.commands._bootstrap_config``: ``prepare_config`` fills in
the provider's defaults.yaml, then ``validate_config`` checks ``ray-schema.json`` and the node-type rules),
with the network switched off; broken edits fail those same checks.

Slow: a head and a second node on this machine (both advertise 127.0.0.1; a throw-away auth token keeps
other Ray users out), a 2-worker Ray Train job spread over both nodes and a Tune run across them. This
file doubles as the driver script of that job (``__main__`` below), run in a subprocess so that its Ray
connection and auth settings stay out of the pytest process.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("cluster.yaml", "cluster-onprem.yaml")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """The offline part of ``ray up``: merge with the provider defaults, then validate; returns the result."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection (a cloud API, a package index) fails the test."""

    def refuse(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted during config validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


# ---------------------------------------------------------------------------------------------------------
# fast: the cluster configs


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_ray_up_checks(name: str, offline: None) -> None:
    prepared = ray_up_checks(load(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert prepared["docker"] == {}
    # `ray up` merged the shared setup into head and worker setup (util.merge_setup_commands)
    assert prepared["worker_setup_commands"][-1] == "bash ~/raynas-src/scripts/node_setup.sh"


def test_aws_config_layout(offline: None) -> None:
    prepared = ray_up_checks(load("cluster.yaml"))
    assert prepared["provider"]["type"] == "aws" and prepared["provider"]["region"]
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    workers = [t for name, t in types.items() if name != prepared["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers)
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers)
    # the autoscaler on the head needs boto3 to launch EC2 workers
    assert any("boto3" in cmd for cmd in prepared["head_setup_commands"])


def test_onprem_config_layout(offline: None) -> None:
    config = load("cluster-onprem.yaml")
    prepared = ray_up_checks(config)
    assert prepared["provider"]["type"] == "local"
    assert prepared["provider"]["head_ip"] and prepared["auth"]["ssh_user"]
    (node_type,) = prepared["available_node_types"].values()
    n = len(config["provider"]["worker_ips"])
    assert n >= 1 and node_type["min_workers"] == node_type["max_workers"] == n


@pytest.mark.parametrize("name", CONFIGS)
def test_config_installs_this_checkout_with_pinned_stack(name: str) -> None:
    from packaging.requirements import Requirement

    config = load(name)
    assert config["file_mounts"] == {"~/raynas-src": "."}
    assert (ROOT / config["file_mounts"]["~/raynas-src"] / "pyproject.toml").is_file()
    assert config["setup_commands"][-1] == "bash ~/raynas-src/scripts/node_setup.sh"
    setup = (ROOT / "scripts" / "node_setup.sh").read_text()
    assert 'pip install -e "$CHECKOUT"' in setup
    (stack,) = re.findall(r"^STACK=\((.*)\)$", setup, flags=re.MULTILINE)
    pins = dict(re.findall(r'"([A-Za-z_-]+)(?:\[[^\]]*\])?==([^"]+)"', stack))
    assert set(pins) == {"torch", "torchvision", "ray"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {Requirement(dep).name: Requirement(dep) for dep in project["dependencies"]}
    for package, version in pins.items():
        assert wanted[package].specifier.contains(version), (package, version, str(wanted[package]))

    import ray

    # the cluster must run the Ray this checkout validates against (`ray up` compares versions too)
    assert pins["ray"] == ray.__version__


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        for parent in parents:
            config = config[parent]
        config[key] = value

    return edit


def _min_workers_above_max(config: dict[str, Any]) -> None:
    config["available_node_types"]["gpu_worker"]["min_workers"] = config["max_workers"] + 1


BROKEN = [
    # (config, edit, exception, message): the first two are the classic hand-edit mistakes
    pytest.param(
        "cluster.yaml", _set("unknown_key", 1), "schema", "'unknown_key' was unexpected", id="unknown-key"
    ),
    pytest.param("cluster.yaml", _set("max_workers", "two"), "schema", "is not of type 'integer'", id="type"),
    pytest.param(
        "cluster.yaml",
        _set("head_start_ray_commands", "ray start"),
        "schema",
        "not of type 'array'",
        id="cmds",
    ),
    pytest.param(
        "cluster.yaml",
        _set("available_node_types.gpu_worker.resources", {"GPU": 0.5}),
        "schema",
        "not of type 'integer'",
        id="fractional-gpu",
    ),
    pytest.param(
        "cluster.yaml",
        _set("head_node_type", "nope"),
        "value",
        "must be one of `available_node_types`",
        id="head",
    ),
    pytest.param("cluster.yaml", _min_workers_above_max, "value", "smaller than the sum", id="min-workers"),
    pytest.param(
        "cluster-onprem.yaml",
        _set("provider.worker_ips", "192.0.2.11"),
        "schema",
        "not of type 'array'",
        id="ips",
    ),
    pytest.param(
        "cluster-onprem.yaml", _set("idle_timeout_minutes", "5m"), "schema", "not of type", id="timeout"
    ),
]


@pytest.mark.parametrize(("name", "edit", "error", "match"), BROKEN)
def test_broken_config_fails_ray_up_checks(
    name: str, edit: Callable, error: str, match: str, offline: None
) -> None:
    import jsonschema

    config = load(name)
    ray_up_checks(config)  # the file itself is fine ...
    edit(config)
    expected = jsonschema.ValidationError if error == "schema" else ValueError
    with pytest.raises(expected, match=re.escape(match)):  # ... the edit is what breaks it
        ray_up_checks(config)


# ---------------------------------------------------------------------------------------------------------
# slow: two Ray nodes on this machine


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _node_processes(marker: str) -> list[int]:
    """Pids of the Ray processes whose command line names ``marker`` (our temp dir), plus descendants."""
    ppid: dict[int, int] = {}
    ours: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if marker in cmdline:
            ours.add(int(entry.name))
    grew = True
    while grew:
        children = {pid for pid, parent in ppid.items() if parent in ours} - ours
        ours |= children
        grew = bool(children)
    ours.discard(os.getpid())
    return sorted(ours)


def _stop_nodes(marker: str, grace_s: float = 10.0) -> None:
    """Stop only the nodes this test started.

    ``ray stop`` terminates every Ray process of the machine, including other people's clusters and
    test runs; so this sends SIGTERM to the processes of our nodes (found by their temp dir), then
    SIGKILL to whatever is still alive after ``grace_s``.
    """
    pids = _node_processes(marker)
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
            time.sleep(0.2)
        if not pids:
            return


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _ray(args: list[str], env: dict[str, str], timeout: float) -> None:
    ray_cli = Path(sys.executable).with_name("ray")
    command = [str(ray_cli)] if ray_cli.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    proc = subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"ray {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _node_args(temp_dir: str) -> list[str]:
    """Per-node ports picked free, so two nodes (and anyone else's Ray) can share this machine."""
    agent_http, agent_grpc, runtime_env, metrics = _free_ports(4)
    return [
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
        "--object-store-memory=100000000",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]


@contextmanager
def two_node_cluster(env: dict[str, str]) -> Iterator[str]:
    """A head (resource ``head``) and a second node (resource ``node2``), 1 CPU each; yields the address."""
    # short path: Ray's unix sockets live under it (108-byte limit)
    temp_dir = tempfile.mkdtemp(prefix="rn_", dir="/tmp")
    port, dashboard = _free_ports(2)
    address = f"127.0.0.1:{port}"
    try:
        _ray(
            ["start", "--head", f"--port={port}", '--resources={"head": 1}', "--include-dashboard=false"]
            + [f"--dashboard-port={dashboard}"]
            + _node_args(temp_dir),
            env,
            timeout=180,
        )
        _ray(
            ["start", f"--address={address}", '--resources={"node2": 1}'] + _node_args(temp_dir),
            env,
            timeout=180,
        )
        yield address
    finally:
        _stop_nodes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_train_and_tune_span_two_nodes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # token auth with a throw-away token: nothing else on this machine can join or drive these nodes
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex, RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = tmp_path / "result.json"
    with two_node_cluster(env) as address:
        driver = subprocess.run(
            [sys.executable, __file__, address, str(tmp_path / "storage"), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=360,
        )
        assert driver.returncode == 0, f"driver failed:\n{driver.stdout[-4000:]}\n{driver.stderr[-4000:]}"
    result = json.loads(out.read_text())

    nodes = result["nodes"]  # node id -> custom resource that marks it ("head" / "node2")
    assert sorted(nodes.values()) == ["head", "node2"]
    # Ray Train: SPREAD put the two DDP workers on different nodes, and gloo's all-reduce crossed them
    assert sorted(result["train_nodes"]) == sorted(nodes)
    assert result["allreduce"] == 1.0 + 2.0
    # Ray Tune: each trial pinned (by custom resource) to one node ran there
    assert {pin: nodes[node] for pin, node in result["tune_nodes"].items()} == {
        "head": "head",
        "node2": "node2",
    }


# ---------------------------------------------------------------------------------------------------------
# the driver of the slow test: python tests/test_cluster.py ADDRESS STORAGE_DIR OUT_JSON


def _train_loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    rank = ray.train.get_context().get_world_rank()
    value = torch.tensor([rank + 1.0])
    dist.all_reduce(value)
    nodes: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    metrics = {"allreduce": float(value.item()), "train_nodes": ",".join(nodes)}
    if rank != 0:
        ray.train.report(metrics)
        return
    # Ray Train keeps the metrics that come with a checkpoint; rank 0 sends a tiny one
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        Path(checkpoint_dir, "done").write_text("1")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir))


def _trial(config: dict[str, Any]) -> None:
    import ray
    from ray import tune

    tune.report({"pin": config["pin"], "node_id": ray.get_runtime_context().get_node_id()})


def _driver(address: str, storage: str, out: str) -> None:
    import ray
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer

    ray.init(address=address, log_to_driver=False)
    nodes = {
        n["NodeID"]: next(r for r in ("head", "node2") if r in n["Resources"])
        for n in ray.nodes()
        if n["Alive"]
    }
    trainer = TorchTrainer(
        _train_loop,
        scaling_config=ray.train.ScalingConfig(
            num_workers=2, use_gpu=False, placement_strategy="SPREAD", resources_per_worker={"CPU": 1}
        ),
        run_config=ray.train.RunConfig(name="train", storage_path=storage),
    )
    metrics = trainer.fit().metrics
    tuner = tune.Tuner(
        tune.with_resources(_trial, lambda cfg: tune.PlacementGroupFactory([{"CPU": 1, cfg["pin"]: 1}])),
        param_space={"pin": tune.grid_search(["head", "node2"])},
        run_config=tune.RunConfig(name="tune", storage_path=storage, verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    table = grid.get_dataframe()
    result = {
        "nodes": nodes,
        "allreduce": metrics["allreduce"],
        "train_nodes": metrics["train_nodes"].split(","),
        "tune_nodes": dict(zip(table["pin"], table["node_id"])),
    }
    Path(out).write_text(json.dumps(result))
    ray.shutdown()


if __name__ == "__main__":
    _driver(*sys.argv[1:4])
