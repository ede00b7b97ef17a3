"""The run seed sets the order of the training data on every worker count (issue 27).

Ray's ``prepare_data_loader`` used to put in a ``DistributedSampler`` of seed 0, so with 2 workers runs of
seeds 0/1/2 saw the same data order. The unit tests read ``make_loader``'s order for 1 and 2 ranks; one
real 2-worker Ray Train run (a task that trains nothing and records the image ids each rank reads) shows
the seed reaches the workers, epoch after epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tiny_data import TINY_DIGITS
from torch import nn

from raynas.data.config import DataConfig
from raynas.data.loaders import build_dataset, make_loader
from raynas.models.config import ModelConfig
from raynas.training.config import (
    DartsConfig,
    OPANASDartsConfig,
    OptimConfig,
    RunConfig,
    SupernetConfig,
    TrainConfig,
)
from raynas.training.darts import DartsTask, OPANASDartsTask
from raynas.training.engine import Task, _prepare_train_loaders
from raynas.training.launch import fit
from raynas.training.ray_hooks import RUNTIME_ENV
from raynas.training.standalone import StandaloneTask
from raynas.training.supernet import SupernetTask

SIZE = 16


class Ids(torch.utils.data.Dataset):
    """Items ``(image, {"image_id": i})`` as the detection datasets give them, without the images' cost."""

    def __len__(self) -> int:
        return SIZE

    def __getitem__(self, i: int):
        return torch.zeros(1), {"image_id": i}


def order(seed: int, shard: tuple[int, int], epoch: int = 0, dataset=None) -> list[int]:
    """The image ids a shuffled loader of ``seed`` gives rank ``shard[0]`` of ``shard[1]`` in ``epoch``."""
    loader = make_loader(Ids() if dataset is None else dataset, 2, True, seed=seed, shard=shard)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return [int(t["image_id"]) for _, targets in loader for t in targets]


@pytest.mark.parametrize("shard", [(0, 1), (0, 2), (1, 2)], ids=["world1", "world2-rank0", "world2-rank1"])
def test_the_seed_sets_the_order_on_every_rank(shard: tuple[int, int]) -> None:
    assert order(0, shard) == order(0, shard), "the same seed must give the same order"
    assert order(0, shard) != order(1, shard), "another seed must give another order"
    assert len(order(0, shard)) == SIZE // shard[1]


def test_two_ranks_share_the_data_without_overlap() -> None:
    for seed in (0, 1):
        rank0, rank1 = order(seed, (0, 2)), order(seed, (1, 2))
        assert sorted(rank0 + rank1) == list(range(SIZE))


def test_each_epoch_reads_another_order() -> None:
    assert order(3, (0, 2), epoch=0) != order(3, (0, 2), epoch=1)


def test_an_unshuffled_loader_reads_everything_in_order_on_any_rank() -> None:
    """Evaluation and scoring loaders are not sharded: rank 0 evaluates on the whole val split."""
    loader = make_loader(Ids(), 4, False, seed=5, shard=(1, 2))
    assert [int(t["image_id"]) for _, targets in loader for t in targets] == list(range(SIZE))


def test_the_training_loop_refuses_a_loader_that_would_not_shard() -> None:
    """With 2+ workers the loop no longer lets Ray put in its (seed 0) sampler: a training loader that is
    not sharded would train every rank on all the data, so it is refused before the first step."""
    with pytest.raises(RuntimeError, match="training loader 'alphas' reads the whole dataset on each of 2"):
        _prepare_train_loaders(
            {"train": make_loader(Ids(), 2, True, shard=(0, 2)), "alphas": make_loader(Ids(), 2, True)}, 2
        )


TASKS = {
    "standalone": (StandaloneTask, TrainConfig),
    "supernet": (SupernetTask, SupernetConfig),
    "darts": (DartsTask, DartsConfig),  # a weight half and an alpha half of the training images
    "opanas_darts": (OPANASDartsTask, OPANASDartsConfig),  # the training images and the search split
}


def loader_seeds(task: str, root: Path, seed: int) -> dict[str, int]:
    """The seed of each training loader of ``task`` (every loader a Task makes, not only the first)."""
    task_cls, config_cls = TASKS[task]
    cfg = config_cls(
        data=DataConfig(root=str(root), **TINY_DIGITS, batch_size=2, hflip=0.0, search_fraction=0.25),
        model=ModelConfig(kind="retinanet", backbone="resnet18"),
        run=RunConfig(seed=seed),
    )
    loaders = task_cls(cfg).train_loaders(build_dataset(cfg.data, "train"))
    return {name: loader.generator.initial_seed() for name, loader in loaders.items()}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_training_loader_of_every_task_follows_the_run_seed(task: str, tiny_digits: Path) -> None:
    """make_loader seeds a sampler with the seed it is given (above), so each loader's seed must move
    with run.seed; two loaders of one task draw different orders."""
    seeds = [loader_seeds(task, tiny_digits, run_seed) for run_seed in (0, 1, 0)]
    assert seeds[0] == seeds[2]
    assert all(seeds[0][name] != seeds[1][name] for name in seeds[0])
    assert len(set(seeds[0].values())) == len(seeds[0])


# -- the seed inside a real 2-worker Ray Train run ----------------------------------------------------------


class RecordOrderTask(Task):
    """Trains nothing: records the image ids each rank's training loader gives in every epoch, gathered
    onto rank 0 and stored in the checkpoint (``orders[epoch][rank]``)."""

    use_ddp = False

    def __init__(self, cfg):
        super().__init__(cfg)
        self.seen: list[int] = []
        self.orders: list[list[list[int]]] = []

    def build_model(self, num_classes: int) -> nn.Module:
        return nn.Linear(1, 1)

    def train_step(self, model: nn.Module, batch, step: int, extra_batches: dict) -> dict[str, float]:
        self.seen.extend(int(t["image_id"]) for t in batch[1])
        return {"loss": 0.0}

    def epoch_metrics(self, model: nn.Module) -> dict:
        ranks: list = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, self.seen)
        self.orders.append(ranks)
        self.seen = []
        return {}

    def evaluate(self, model: nn.Module, val_loader, device: torch.device) -> dict[str, float]:
        return {}

    def extra_state(self, model: nn.Module) -> dict:
        return {"orders": self.orders}


@pytest.fixture(scope="module")
def ray_with_tests() -> Iterator[None]:
    """conftest's ``ray_session``, whose workers can also import this module (where the task lives)."""
    import ray

    env = {**RUNTIME_ENV, "env_vars": {"PYTHONPATH": str(Path(__file__).parent)}}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)
    yield
    ray.shutdown()


def test_a_two_worker_run_reads_the_order_of_its_seed(
    ray_with_tests, tiny_digits: Path, tmp_path: Path
) -> None:
    data = DataConfig(root=str(tiny_digits), **TINY_DIGITS, batch_size=2, hflip=0.0)
    cfg = TrainConfig(
        data=data,
        model=ModelConfig(kind="retinanet", backbone="resnet18", out_channels=16, min_size=64, max_size=64),
        optim=OptimConfig(epochs=2, lr=0.01, warmup_iters=1, milestones=[]),
        run=RunConfig(name="order", storage_path=str(tmp_path), num_workers=2, max_failures=0, seed=1),
    )
    orders = fit(f"{__name__}.RecordOrderTask", cfg).load_state()["orders"]

    dataset = build_dataset(data, "train")
    ids = [int(dataset[i][1]["image_id"]) for i in range(len(dataset))]
    expected = [[order(1, (rank, 2), epoch, dataset) for rank in (0, 1)] for epoch in (0, 1)]
    assert orders == expected
    assert sorted(orders[0][0] + orders[0][1]) == sorted(ids)
    # what Ray's own sampler (seed 0) would have given: the test tells the seeds apart
    assert expected[0] != [order(0, (rank, 2), 0, dataset) for rank in (0, 1)]
