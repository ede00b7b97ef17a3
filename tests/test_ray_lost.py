"""A job whose Ray processes go away under it (``ray stop`` run elsewhere, a lost node) ends with one line
and exit status 1, not a traceback of Ray's internals; a bug keeps its traceback."""

from __future__ import annotations

import pytest
import ray.exceptions

from raynas.errors import run_main


def test_ray_gone_under_a_job_is_one_line_and_exit_1(capsys: pytest.CaptureFixture) -> None:
    def job() -> int:  # what ray.get on Ray Train's controller raised when ray stop ran under a job
        raise ray.exceptions.ActorDiedError()

    assert run_main("demo", job) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("demo: error: Ray's processes for this job went away")
    assert "ActorDiedError" in err[0] and "re-run the same command" in err[0]


def test_a_bug_keeps_its_traceback() -> None:
    def job() -> int:
        return {}["missing"]

    with pytest.raises(KeyError):
        run_main("demo", job)
