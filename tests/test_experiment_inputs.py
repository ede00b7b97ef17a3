"""The experiment scripts' flags and the result files they read back (issue 25), through each
script's ``main`` in this process: a count below its minimum, a damaged or edited result file, a genotype
or a result folder that does not fit is one line naming the flag or file, exit 2, before Ray starts, with
``--out`` byte for byte as it was. Every refusal here comes before Ray, so the tests take seconds."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml
from helpers_supernet import make_standalone_checkpoint, make_supernet_checkpoint

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
RESULTS = EXPERIMENTS / "results"
sys.path.insert(0, str(EXPERIMENTS))
import compare_strategies  # noqa: E402
import fad_evidence  # noqa: E402
import mask_fad  # noqa: E402
import opanas_ea  # noqa: E402
import opanas_evidence  # noqa: E402
import rank_correlation  # noqa: E402
import supernet_variants  # noqa: E402
import train_baseline  # noqa: E402

SCRIPTS = {
    module.__name__: module
    for module in (compare_strategies, fad_evidence, mask_fad, opanas_ea, opanas_evidence,
                   rank_correlation, supernet_variants, train_baseline)
}  # fmt: skip


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` and the hash of its bytes: equal before and after = nothing written."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def refused(capfd: pytest.CaptureFixture, script: str, argv: list[str], out: Path, *needles: str) -> str:
    """``script`` said one line naming ``needles``, exited 2 without a traceback or Ray, and left ``out``
    (and every file in it) as it was."""
    capfd.readouterr()
    before = tree(out) if out.exists() else None
    code = SCRIPTS[script].main(argv)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"{script}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert (tree(out) if out.exists() else None) == before
    assert not ray.is_initialized()
    return lines[0]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output folder that already holds a file of the user's."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    return folder


def table_copy(tmp_path: Path, name: str) -> Path:
    """A copy of the committed table ``experiments/results/<name>``: the folder a run extends."""
    return Path(shutil.copytree(RESULTS / name, tmp_path / name))


def cut(path: Path, keep: float = 0.5) -> None:
    """Cut ``path`` short, as a full disk or an interrupted copy does."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def cut_last_row(path: Path, cells: int) -> None:
    """Cut the last row of a CSV file after its first ``cells`` cells (no quoted cells before them)."""
    lines = path.read_text().splitlines(keepends=True)
    lines[-1] = ",".join(lines[-1].split(",")[:cells])
    path.write_text("".join(lines))


# ---- counts ------------------------------------------------------------------------------------------
COUNTS = [
    ("compare_strategies", ["--run", "--seeds", "-1"], "--seeds"),
    ("compare_strategies", ["--run", "--epochs", "0"], "--epochs"),
    ("compare_strategies", ["--run", "--search-images", "-5"], "--search-images"),
    ("compare_strategies", ["--run", "--scorers", "0"], "--scorers"),
    ("compare_strategies", ["--run", "--smoke", "--train-workers", "-1"], "--train-workers"),
    ("opanas_ea", ["--train-workers", "-1"], "--train-workers"),
    ("opanas_ea", ["--smoke", "--scorers", "-3"], "--scorers"),
    ("opanas_evidence", ["--smoke", "--seeds", "-1"], "--seeds"),
    ("opanas_evidence", ["--search-dir", "nowhere", "--random-archs", "-1"], "--random-archs"),
    ("opanas_evidence", ["--smoke", "--epochs", "0"], "--epochs"),
    ("opanas_evidence", ["--smoke", "--train-workers", "0"], "--train-workers"),
    ("fad_evidence", ["--smoke", "--seeds", "-1"], "--seeds"),
    ("fad_evidence", ["--search-epochs", "0"], "--search-epochs"),
    ("fad_evidence", ["--paper", "--epochs", "-1"], "--epochs"),
    ("fad_evidence", ["--train-images", "-5"], "--train-images"),
    ("fad_evidence", ["--c-prime", "0"], "--c-prime"),
    ("fad_evidence", ["--train-workers", "0"], "--train-workers"),
    ("mask_fad", ["--smoke", "--seeds", "-1"], "--seeds"),
    ("mask_fad", ["--search-epochs", "-2"], "--search-epochs"),
    ("mask_fad", ["--epochs", "0"], "--epochs"),
    ("mask_fad", ["--train-images", "-5"], "--train-images"),
    ("mask_fad", ["--c-prime", "-8"], "--c-prime"),
    ("mask_fad", ["--train-workers", "-1"], "--train-workers"),
    ("rank_correlation", ["--smoke", "--pool", "-5"], "--pool"),
    ("rank_correlation", ["--checkpoint", "nowhere", "--m", "-3"], "--m"),
    ("rank_correlation", ["--smoke", "--epochs", "-1"], "--epochs"),
    ("rank_correlation", ["--smoke", "--search-images", "0"], "--search-images"),
    ("rank_correlation", ["--smoke", "--scorers", "0"], "--scorers"),
    ("rank_correlation", ["--smoke", "--train-workers", "0"], "--train-workers"),  # was: the default
    ("supernet_variants", ["--search-images", "-1"], "--search-images"),
    ("supernet_variants", ["--scorers", "0"], "--scorers"),
    ("supernet_variants", ["--train-workers", "-1"], "--train-workers"),
    ("train_baseline", ["--workers", "0"], "--workers"),
    ("train_baseline", ["--epochs", "-1"], "--epochs"),
]


@pytest.mark.parametrize(("script", "argv", "flag"), COUNTS, ids=[f"{s}{a[-2]}" for s, a, _ in COUNTS])
def test_a_count_below_its_minimum_is_refused_before_ray(capfd, out, script, argv, flag) -> None:
    line = refused(capfd, script, [*argv, "--out", str(out)], out, flag, "must be >=")
    assert f"give {flag} " in line  # the fix


def test_more_picks_than_the_pool_holds_and_a_repeated_variant_are_refused(capfd, out) -> None:
    argv = ["--checkpoint", "nowhere", "--pool", "20", "--m", "21", "--out", str(out)]
    refused(capfd, "rank_correlation", argv, out, "--m 21 exceeds --pool 20")
    argv = ["--variants", "fair_gamma", "fair_gamma", "--out", str(out)]
    refused(capfd, "supernet_variants", argv, out, "--variants", "fair_gamma", "once")


# ---- mask_fad --genotype -----------------------------------------------------------------------------
def test_a_refused_genotype_leaves_the_table_its_record_and_genotype_as_they_were(tmp_path, capfd) -> None:
    table = table_copy(tmp_path, "mask_fad")
    detection = RESULTS / "fad_evidence" / "genotypes" / "fad_full.json"  # two groups: a detection head's
    argv = ["--out", str(table), "--genotype"]
    refused(capfd, "mask_fad", [*argv, str(detection)], table, "--genotype", "g2_e0_1")
    other = json.loads((table / "genotype.json").read_text())
    other["arch"]["g1_e0_1"] = "sep_3x3" if other["arch"]["g1_e0_1"] != "sep_3x3" else "std_3x3"
    (tmp_path / "other.json").write_text(json.dumps(other))
    line = refused(capfd, "mask_fad", [*argv, str(tmp_path / "other.json")], table, "another FAD genotype")
    assert f"--genotype {table / 'genotype.json'}" in line  # the fix: the table's own genotype
    same = [*argv, str(table / "genotype.json"), "--train-images", "300"]  # a table of another recipe
    refused(capfd, "mask_fad", same, table, "holds a table made with train_images=600")


# ---- result tables extended in --out ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["fad_evidence", "mask_fad"])
@pytest.mark.parametrize(
    "damage", ["table cut short", "record cut short", "record edited", "record emptied", "head edited"]
)
def test_a_damaged_table_or_record_is_named_and_left_as_it_is(tmp_path, capfd, name, damage) -> None:
    table = table_copy(tmp_path, name)
    csv, record = table / f"{name}.csv", table / f"{name}.json"
    if damage == "table cut short":
        cut(csv)
        needle = str(csv)
    elif damage == "record cut short":
        cut(record)
        needle = str(record)
    elif damage == "record edited":
        content = json.loads(record.read_text())
        record.write_text(json.dumps({**content, "settings": ["epochs", 4]}))
        needle = f"{record}: 'settings'"
    elif damage == "record emptied":
        record.write_text("{}\n")
        needle = f"{record}: 'settings' is missing"
    else:
        rows = pd.read_csv(csv)
        rows.loc[0, "head"] = "torchvis"
        csv.write_text(rows.to_csv(index=False))
        needle = f"{csv} line 2: head 'torchvis'"
    line = refused(capfd, name, ["--out", str(table)], table, needle)
    assert "restore it" in line and "choose another --out" in line


def test_a_table_without_its_record_is_not_overwritten(tmp_path, capfd) -> None:
    table = table_copy(tmp_path, "fad_evidence")
    (table / "fad_evidence.json").unlink()
    refused(capfd, "fad_evidence", ["--out", str(table)], table, "fad_evidence.csv has no record")


def test_fad_evidence_refuses_an_edited_search_cost_or_a_damaged_kept_genotype(tmp_path, capfd) -> None:
    table = table_copy(tmp_path, "fad_evidence")
    record = table / "fad_evidence.json"
    content = json.loads(record.read_text())
    record.write_text(
        json.dumps({**content, "search_costs": [{"arm": "FAD searched", "search_time_s": "x"}]})
    )
    refused(capfd, "fad_evidence", ["--out", str(table)], table, "'search_costs'")
    record.write_text(json.dumps(content))
    cut(table / "genotypes" / "rf5.json")
    refused(capfd, "fad_evidence", ["--out", str(table)], table, "rf5.json", "search rf5 again")


# ---- caches of scores that are reused ---------------------------------------------------------------
def test_damaged_kept_scores_are_refused_before_ray(tmp_path, capfd, out) -> None:
    pool = out / "pool.csv"
    shutil.copyfile(RESULTS / "rank_correlation" / "pool.csv", pool)
    cut_last_row(pool, 4)  # the last architecture lacks most of its edges
    refused(capfd, "rank_correlation", ["--smoke", "--out", str(out)], out, str(pool), "score the pool again")
    pool.unlink()

    scores = out / "scores_fair_gamma.csv"
    shutil.copyfile(RESULTS / "supernet_variants" / "scores_fair_gamma.csv", scores)
    cut_last_row(scores, 3)
    argv = ["--variants", "fair_gamma", "--out", str(out)]
    refused(capfd, "supernet_variants", argv, out, str(scores), "score the architectures again")
    tau = scores.rename(out / "tau_scores_uniform_gamma.csv")  # compare_strategies --run reuses the same
    refused(capfd, "compare_strategies", ["--run", "--out", str(out)], out, str(tau))


# ---- compare_strategies: result folders ------------------------------------------------------------
def results(folder: Path, strategy: str, aps: list[float]) -> Path:
    (folder / strategy).mkdir(parents=True)
    rows = [{"AP": ap, "time_total_s": 1.0 + k, "e0_1": "top_down"} for k, ap in enumerate(aps)]
    (folder / strategy / "results.csv").write_text(pd.DataFrame(rows).to_csv(index=False))
    return folder / strategy / "results.csv"


def test_result_folders_of_the_same_name_are_all_compared(tmp_path, capfd) -> None:
    """Each main job writes ``<out>/search/<strategy>``, so two jobs' folders share their names: every
    folder is kept, labelled by as much of its path as tells it apart."""
    results(tmp_path / "a" / "search", "evolution", [0.1, 0.3])
    results(tmp_path / "b" / "search", "evolution", [0.2, 0.5])
    results(tmp_path / "b" / "search", "random", [0.4])
    folders = [str(tmp_path / "a" / "search"), str(tmp_path / "b" / "search")]
    assert compare_strategies.main([*folders, "--out", str(tmp_path / "c.png")]) == 0
    printed = capfd.readouterr().out
    for label, best in (
        ("a/search/evolution", "0.3"),
        ("b/search/evolution", "0.5"),
        ("b/search/random", "0.4"),
    ):
        assert any(line.split()[:2] == [label, best] for line in printed.splitlines()), printed
    assert (tmp_path / "c.png").stat().st_size > 0


def test_a_result_folder_given_twice_or_a_damaged_results_csv_is_refused(tmp_path, capfd) -> None:
    csv = results(tmp_path / "a" / "search", "evolution", [0.1, 0.3, 0.2])
    twice = [str(tmp_path / "a" / "search"), str(tmp_path / "a" / ".." / "a" / "search")]
    refused(
        capfd,
        "compare_strategies",
        [*twice, "--out", str(tmp_path / "c.png")],
        tmp_path,
        "same result folder",
    )
    folder = [str(tmp_path / "a" / "search"), "--out", str(tmp_path / "c.png")]
    cut_last_row(csv, 2)  # the last evaluation lacks its architecture
    refused(capfd, "compare_strategies", folder, tmp_path, str(csv), "line(s) [4]")
    csv.write_text("AP,e0_1\n0.1,top_down\nbroken,skip\n")
    refused(capfd, "compare_strategies", folder, tmp_path, str(csv), "'AP' that is not a number")
    csv.write_bytes(b"\xff\xfe\x00AP\n")
    refused(capfd, "compare_strategies", folder, tmp_path, str(csv), "not a readable CSV table")
    refused(capfd, "compare_strategies", [folder[0], "--out", str(tmp_path)], tmp_path, "is a folder")
    assert not (tmp_path / "c.png").exists()


def test_a_flag_of_the_other_mode_is_refused_not_ignored(tmp_path, capfd, out) -> None:
    results(tmp_path / "a", "evolution", [0.1])
    folder = [str(tmp_path / "a"), "--out", str(tmp_path / "c.png")]
    refused(
        capfd,
        "compare_strategies",
        [*folder, "--retrain", "--seeds", "5"],
        out,
        "--retrain, --seeds",
        "--run",
    )
    argv = ["--run", "--metric", "AP50", "--out", str(out)]
    refused(capfd, "compare_strategies", argv, out, "--run does not use --metric", "drop --run")
    assert not (tmp_path / "c.png").exists()


# ---- files of the main job that other scripts read ------------------------------------------------------
def test_a_damaged_best_architecture_is_named_before_ray(tmp_path, tiny_digits, capfd) -> None:
    search_dir = tmp_path / "main_job"
    make_supernet_checkpoint(search_dir / "supernet" / "checkpoint_000000", tiny_digits)
    for strategy in ("evolution", "random"):
        shutil.copyfile(RESULTS / "opanas_ea" / f"{strategy}_best_arch.json", tmp_path / f"{strategy}.json")
        (search_dir / "search" / strategy).mkdir(parents=True)
        shutil.copyfile(tmp_path / f"{strategy}.json", search_dir / "search" / strategy / "best_arch.json")
    best = search_dir / "search" / "evolution" / "best_arch.json"
    cut(best)
    out = tmp_path / "evidence"
    argv = ["--search-dir", str(search_dir), "--out", str(out)]
    refused(capfd, "opanas_evidence", argv, search_dir, str(best), "malformed")
    assert not out.exists()
    (search_dir / "search" / "evolution" / "summary.json").write_text("{}")  # a finished search, reused
    argv = ["--retrain", "--out", str(search_dir), "--data", str(tiny_digits)]
    refused(capfd, "opanas_ea", argv, search_dir, str(best))
    standalone = make_standalone_checkpoint(tmp_path / "fpn", tiny_digits)
    argv = ["--checkpoint", str(standalone), "--out", str(out)]
    refused(capfd, "rank_correlation", argv, tmp_path / "fpn", "not by OPANAS super-net training")
    assert not out.exists()


def test_train_baseline_checks_resume_before_making_data_or_a_body(tmp_path, capfd, out) -> None:
    config = yaml.safe_load((EXPERIMENTS / "configs" / "baseline_fcos_r18.yaml").read_text())
    config["data"]["root"] = str(tmp_path / "digits")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    argv = ["--config", str(tmp_path / "c.yaml"), "--out", str(out), "--resume", str(tmp_path)]
    refused(capfd, "train_baseline", argv, out, str(tmp_path), "not a raynas checkpoint")
    assert not (tmp_path / "digits").exists()


def test_supernet_variants_on_scenes_refuses_the_digits_standalone_aps(capfd, out) -> None:
    """The default --archs holds APs measured on the digits proxy: ranking scenes super-nets against them
    would compare two proxies; it says to pass a scenes rank_correlation.csv."""
    refused(
        capfd, "supernet_variants", ["--proxy", "scenes", "--out", str(out)], out, "digits proxy", "--archs"
    )


# ---- flags argparse refuses --------------------------------------------------------------------------
ALL_SCRIPTS = sorted(path.stem for path in EXPERIMENTS.glob("*.py"))


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_an_unknown_flag_is_one_line_naming_it_and_the_help(capfd, script) -> None:
    """argparse prints its usage (a dozen lines) before the error; every script says one line, exit 2."""
    module = __import__(script)
    capfd.readouterr()
    with pytest.raises(SystemExit) as stop:
        module.main(["--no-such-flag"])
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1, lines
    prog = Path(
        sys.argv[0]
    ).name  # argparse's prog: the running program (pytest's here, the script's at a shell)
    assert lines[0] == f"{prog}: error: unrecognized arguments: --no-such-flag (see {prog} --help)", lines[0]
    assert not ray.is_initialized()


def test_an_invalid_choice_through_the_raynas_command_is_one_line(tmp_path) -> None:
    """The ``raynas`` command in a process of its own (the console script's module), a sub-command's
    invalid choice: one line naming the flag, the choices and the sub-command's help; nothing written."""
    import subprocess

    command = [sys.executable, "-m", "raynas.cli", "data", "scenes", "--out", str(tmp_path / "s")]
    result = subprocess.run([*command, "--layout", "nope"], capture_output=True, text=True, check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("raynas data scenes: error: argument --layout: invalid choice: 'nope'")
    assert "'outer'" in lines[0] and lines[0].endswith("(see raynas data scenes --help)")
    assert not (tmp_path / "s").exists()
