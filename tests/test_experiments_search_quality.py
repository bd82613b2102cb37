"""experiments/search_quality.py --quick: searched vs random on tiny data, cached units, variants, noise."""

import json

import pytest
import torch

from pvnas.space.genotype import CellGenotype, Genotype
from test_experiments_ablation import EXPERIMENTS, load_script

SCRIPT = EXPERIMENTS / "search_quality.py"


@pytest.mark.slow
def test_quick_study_caches_its_units_and_compares_searched_with_randoms(tmp_path, monkeypatch):
    from pvnas.search.remedies import perturbation

    # DARTS-PT's ~400 scorings are tests/test_search_remedies_perturbation.py's subject: here, what the study does
    # with a selection's genotype
    monkeypatch.setattr(perturbation, "select", lambda model, clips, labels: Genotype.random(5, min_conv=4).cells)
    study = load_script(SCRIPT)
    threads = torch.get_num_threads()
    out = tmp_path / "q"
    assert study.main(["--quick", "--out", str(out), "--randoms", "2"]) == 0
    assert torch.get_num_threads() == threads
    for name in ("results.md", "results.json", "search_quality.png"):
        assert (out / name).stat().st_size > 0, name
    assert "## Noise" in (out / "results.md").read_text() and "consistency" in (out / "results.md").read_text()
    result = json.loads((out / "results.json").read_text())
    (task,) = result["tasks"]
    (row,) = task["rows"]
    assert len(task["randoms"]) == 2 and all(len(r["top1_each"]) == 2 for r in task["randoms"])  # 2 retrain seeds
    assert row["win"] == (row["searched"]["top1"] > task["random_mean_top1"])
    assert row["clear_win"] == (row["margin"] > task["margin_noise"]) and task["retrain_noise"] >= 0
    assert row["stop_at"]["epoch"] == 1 and set(row["param_free"]) == {"S-NC", "S-RC", "T-NC", "T-RC"}
    # a second study with another selection reuses the search and every retrain it can (cached units)
    searches = sorted((out / "runs").rglob("search_*/seed_0/result.json"))
    stamp = searches[0].stat().st_mtime_ns
    assert study.main(["--quick", "--out", str(out), "--randoms", "2", "--select", "perturbation", "--variant", "pt",
                       "--stop-at", "0"]) == 0
    pt = json.loads((out / "results_pt.json").read_text())
    assert pt["tasks"][0]["randoms"] == task["randoms"] and len(list((out / "runs").rglob("search_*"))) == 1
    assert pt["tasks"][0]["rows"][0]["genotype"]["meta"]["selection"] == "perturbation"
    assert "perturbation" in json.loads(searches[0].read_text()) and searches[0].stat().st_mtime_ns != stamp
    # a capped derivation of the same search: no cell beyond the cap, the search reused
    assert study.main(["--quick", "--out", str(out), "--randoms", "2", "--max-param-free", "0", "--variant", "pf0",
                       "--stop-at", "0"]) == 0
    (pf_row,) = json.loads((out / "results_pf0.json").read_text())["tasks"][0]["rows"]
    assert set(pf_row["param_free"].values()) == {0} and pf_row["genotype"]["meta"]["max_param_free"] == 0
    assert len(list((out / "runs").rglob("search_*"))) == 1 and "alpha_pf0" in json.loads(searches[0].read_text())


@pytest.mark.parametrize("args", [["--randoms", "0"], ["--seeds", "1", "1"], ["--search-preset", "XL"],
                                  ["--set", "nope=1"], ["--tasks", "nope"], ["--max-param-free", "9"],
                                  ["--select", "perturbation", "--max-param-free", "2"]])
def test_bad_study_arguments_are_user_errors(tmp_path, capsys, args):
    study = load_script(SCRIPT)
    assert study.main(["--quick", "--out", str(tmp_path / "x"), *args]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_each_task_is_retrained_for_its_own_length_unless_epochs_is_given(tmp_path, monkeypatch):
    """fine_motion's retrains last 60 epochs (a seed can start late), appearance's 30; --epochs sets every
    task's. The study hands each task its own budget, and the report says which task differs."""
    study = load_script(SCRIPT)
    seen = {}

    class Enough(Exception):
        pass

    def fake_task(spec, budget, *args, **kwargs):
        seen[spec] = budget.network.epochs
        if len(seen) == 2:
            raise Enough
        return {"task": spec.partition(":")[2]}

    monkeypatch.setattr(study, "study_task", fake_task)
    for extra, expected in (([], {"task:appearance": 30, "task:fine_motion": 60}),
                            (["--epochs", "12"], {"task:appearance": 12, "task:fine_motion": 12})):
        seen.clear()
        with pytest.raises(Enough):
            args = ["--tasks", "appearance", "fine_motion", "--out", str(tmp_path), *extra]
            study.run(study.parse_args(args), "cmd")
        assert seen == expected
    assert study.resolve_budget(study.parse_args(["--out", str(tmp_path)])).network.epochs == 30  # no task: 30
    tasks = [{"data": "task:order", "retrain_epochs": 30}, {"data": "task:fine_motion", "retrain_epochs": 60}]
    assert study.epochs_text(30, tasks) == "30 epochs (task:fine_motion 60: the task's own length)"
    assert study.epochs_text(30, tasks[:1]) == "30 epochs"


def test_pooled_noise_is_the_within_genotype_std_with_its_degrees_of_freedom():
    study = load_script(SCRIPT)
    # by hand: means 0.6 and 0.3; squares 0.01 + 0.01 and 0.01 + 0.01 + 0.04 = 0.08 over 1 + 2 degrees of freedom
    assert study.pooled_noise([[0.5, 0.7], [0.2, 0.2, 0.5]]) == pytest.approx((0.08 / 3) ** 0.5)
    assert study.pooled_noise([[0.5], [0.2]]) is None  # one retrain per genotype: no spread to measure


def test_a_task_row_carries_its_noise_and_margin_noise_from_the_retrains(tmp_path, monkeypatch):
    """The study of one task on canned search and retrain results: the noise, the margin noise (its
    sqrt(1/R + 1/(R * randoms)) factor) and the win rules against numbers worked out by hand."""
    study = load_script(SCRIPT)
    budget = study.resolve_budget(study.parse_args(["--quick", "--randoms", "2", "--retrain-seeds", "0", "1", "2",
                                                    "--stop-at", "0"]))
    searched = {s: study.Genotype.random(7 + s, min_conv=4).to_dict() for s in range(3)}
    randoms = [study.Genotype.random(study.RANDOM_SEED_BASE + i, min_conv=4).to_dict() for i in range(2)]
    top1 = {  # per genotype, its 3 retrains
        study.key_of(searched[0]["cells"]): [0.70, 0.80, 0.90],  # mean 0.80, squares 0.02
        study.key_of(searched[1]["cells"]): [0.55, 0.55, 0.85],  # mean 0.65, squares 0.06
        study.key_of(searched[2]["cells"]): [0.55, 0.60, 0.65],  # mean 0.60, squares 0.005
        study.key_of(randoms[0]["cells"]): [0.40, 0.60, 0.50],  # mean 0.50, squares 0.02
        study.key_of(randoms[1]["cells"]): [0.60, 0.60, 0.60],  # mean 0.60, squares 0
    }
    seeds = {0: 0, 1: 1, 2: 2}

    def fake_search(data, seed, budget, run):
        return {"genotype": searched[seed], "stop_at": None, "param_free": {}, "entropy_drop": {}, "seconds": 1.0,
                "supernet_acc": 0.5, "alpha": searched[seed]}

    def fake_retrain(data, genotype, seed, budget, run):
        return {"top1": top1[study.key_of(genotype["cells"])][seeds[seed]], "auc": 0.5, "learned": True, "videos": 625}

    monkeypatch.setattr(study, "search_unit", fake_search)
    monkeypatch.setattr(study, "retrain_unit", fake_retrain)
    task = study.study_task("synthetic:16", budget, [0, 1, 2], tmp_path, jobs=1, threads=1)
    noise = (0.105 / 10) ** 0.5  # squares 0.02 + 0.06 + 0.005 + 0.02 + 0 over 5 genotypes x 2 degrees of freedom
    assert task["retrain_noise"] == pytest.approx(noise)
    assert task["margin_noise"] == pytest.approx(noise * (1 / 3 + 1 / 6) ** 0.5)  # R = 3 retrains, 2 randoms
    assert task["random_mean_top1"] == pytest.approx(0.55)
    rows = {r["seed"]: r for r in task["rows"]}
    # margin noise 0.0725, noise 0.1025: a margin of 0.10 is clear against the first, not the second
    assert [rows[s]["margin"] for s in range(3)] == pytest.approx([0.25, 0.10, 0.05])
    assert [(rows[s]["win"], rows[s]["clear_win"]) for s in range(3)] == [(True, True), (True, True), (True, False)]
    assert (task["wins"], task["clear_wins"]) == (3, 2)
    every = [v for values in top1.values() for v in values]
    assert task["eval_noise"] == pytest.approx((sum(p * (1 - p) for p in every) / len(every) / 625) ** 0.5)
    assert task["train_noise"] == pytest.approx((noise**2 - task["eval_noise"] ** 2) ** 0.5)
    assert len(task["consistency"]["S-NC"]["pairs"]) == 3  # 3 seeds: 3 pairs


def test_a_task_whose_clips_changed_is_studied_afresh(tmp_path, monkeypatch):
    """Units are cached by folder: after a task's version bump (new clips or split), every search and retrain
    of it gets a new folder, so no result of the old clips is reused."""
    import dataclasses

    study = load_script(SCRIPT)
    budget = study.resolve_budget(study.parse_args(["--quick", "--randoms", "1", "--stop-at", "0"]))
    runs: list = []

    def fake_search(data, seed, budget, run):
        runs.append(run)
        assert data == "task:order?train=2"  # the task's search split
        return {"genotype": Genotype.random(seed, min_conv=4).to_dict(), "stop_at": None, "param_free": {},
                "entropy_drop": {}, "seconds": 1.0, "supernet_acc": 0.5}

    def fake_retrain(data, genotype, seed, budget, run):
        runs.append(run)
        assert data == "task:order"  # the whole training split
        return {"top1": 0.5, "auc": 0.5, "learned": True, "videos": 625}

    monkeypatch.setattr(study, "search_unit", fake_search)
    monkeypatch.setattr(study, "retrain_unit", fake_retrain)
    monkeypatch.setitem(study.TASKS, "order", dataclasses.replace(study.TASKS["order"], search_per_class=2))
    task = study.study_task("task:order", budget, [0], tmp_path, jobs=1, threads=1)
    assert task["search_data"] == "task:order?train=2"
    assert study.search_data_text([task]) == ("Searches of task:order on `task:order?train=2`: part of the retrain's "
                                              "training split.")
    assert study.search_data_text([{**task, "search_data": "task:order"}]) == ""
    before, runs[:] = set(runs), []
    study.study_task("task:order", budget, [0], tmp_path, jobs=1, threads=1)
    assert set(runs) == before  # unchanged: the same folders (the cache)
    order = study.TASKS["order"]
    monkeypatch.setitem(study.TASKS, "order", dataclasses.replace(order, version=order.version + 1))
    runs[:] = []
    study.study_task("task:order", budget, [0], tmp_path, jobs=1, threads=1)
    assert len(set(runs)) == len(before) and not set(runs) & before


def test_evaluation_noise_is_binomial_and_training_noise_the_rest():
    study = load_script(SCRIPT)
    results = [{"top1": 0.6, "videos": 600}, {"top1": 0.5, "videos": 600}]
    # by hand: (0.24 / 600 + 0.25 / 600) / 2 = 4.0833e-4 -> 2.02 points; training sqrt(0.05^2 - 4.0833e-4) = 4.57
    parts = study.noise_parts(results, 0.05)
    assert parts["eval_noise"] == pytest.approx(0.020207, abs=1e-6)
    assert parts["train_noise"] == pytest.approx(0.045735, abs=1e-6) and parts["val_videos"] == 600
    assert study.noise_parts(results, 0.01)["train_noise"] == 0.0  # all of it evaluation noise


def test_search_consistency_counts_shared_choices_against_chance():
    study = load_script(SCRIPT)
    a = Genotype.random(3, min_conv=4)
    edges = list(a.cells["S-NC"].edges)
    edges[0] = ("identity" if edges[0][0] != "identity" else "max_pool_1x3x3", edges[0][1])  # another op
    edges[7] = (edges[7][0], 4 if edges[7][1] != 4 else 3)  # another input of node 5
    b = Genotype({**a.cells, "S-NC": CellGenotype(tuple(edges))})
    c = study.consistency([a.to_dict(), b.to_dict(), a.to_dict()])
    assert c["S-NC"]["pairs"] == [6, 8, 6] and c["T-RC"]["pairs"] == [8, 8, 8]
    # chance: two uniformly random cells, counted over many pairs (random.Random: the sampler of Genotype.random)
    pairs = [(Genotype.random(2 * i).to_dict(), Genotype.random(2 * i + 1).to_dict()) for i in range(2000)]
    for kind in ("S-NC", "T-NC"):
        counted = sum(study.shared_choices(x, y, kind) for x, y in pairs) / len(pairs)
        assert study.chance_shared(kind) == pytest.approx(counted, abs=0.07)


def test_search_only_reports_how_consistent_the_searches_are_without_retraining(tmp_path):
    study = load_script(SCRIPT)
    out = tmp_path / "s"
    assert study.main(["--quick", "--out", str(out), "--seeds", "0", "1", "--search-only", "--stop-at", "0"]) == 0
    (task,) = json.loads((out / "results.json").read_text())["tasks"]
    assert len(task["consistency"]["T-NC"]["pairs"]) == 1 and len(task["rows"]) == 2
    assert "Search consistency" in (out / "results.md").read_text()
    assert not list((out / "runs").rglob("train_*"))  # nothing retrained
