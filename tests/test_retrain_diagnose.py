"""A retrain that does not learn says so, with the likely cause read from its own records."""

import json
import math

import numpy as np

from pvnas.config import NETWORK_PRESETS, override
from pvnas.data.encode import write_video
from pvnas.retrain.diagnose import blind_to_motion, check_epochs, diagnose, early_check, temporal_ops
from pvnas.retrain.evaluate import run_eval
from pvnas.retrain.train import run_train
from pvnas.runtime.run import NonFiniteLossError
from pvnas.space.genotype import CellGenotype, Genotype
from pvnas.viz.report import build_report

SPATIAL = ("sep_conv_1x3x3", "dil_conv_1x3x3", "identity", "max_pool_1x3x3")


def blind_genotype() -> Genotype:
    """Every cell of spatial ops only: nothing mixes frames before the global pool."""
    edges = tuple((SPATIAL[e % 4], j) for e, j in enumerate((0, 1, 0, 1, 1, 2, 2, 3)))
    return Genotype({kind: CellGenotype(edges) for kind in ("S-NC", "S-RC", "T-NC", "T-RC")})


def records(accs, losses, seen=320):
    return [{"epoch": i + 1, "acc": a, "loss": loss, "seen": seen} for i, (a, loss) in enumerate(zip(accs, losses))]


def test_temporal_ops_are_counted_over_all_cells():
    assert temporal_ops(blind_genotype()) == 0 and blind_to_motion(blind_genotype())
    assert temporal_ops(Genotype.random(0, min_conv=4)) > 0 and blind_to_motion(Genotype.random(0, min_conv=4)) is None


def test_learning_is_accuracy_significantly_above_chance():
    k = 8
    # 320 clips: chance 0.125, three standard errors 0.055
    assert diagnose(records([0.15, 0.20], [2.08, 1.9]), k, Genotype.random(0, 4))["learned"]
    assert not diagnose(records([0.13, 0.17], [2.08, 2.05]), k, Genotype.random(0, 4))["learned"]
    # the same accuracy over few clips is not evidence of learning
    assert not diagnose(records([0.2], [2.0], seen=16), k, Genotype.random(0, 4))["learned"]


def test_causes_name_a_blind_network_a_flat_and_an_exploding_loss():
    k, ln_k = 8, math.log(8)
    blind = diagnose(records([0.12, 0.13], [ln_k, ln_k - 0.001]), k, blind_genotype())
    assert not blind["learned"] and "no temporal op" in blind["causes"][0] and "too few --epochs" in blind["causes"][1]
    exploding = diagnose(records([0.12, 0.12], [2.1, math.nan]), k, Genotype.random(0, 4))
    assert len(exploding["causes"]) == 1 and "learning rate is too high" in exploding["causes"][0]
    slow = diagnose(records([0.12, 0.13], [2.0, 1.7]), k, Genotype.random(0, 4))
    assert slow["causes"] == [slow["causes"][0]] and "train longer" in slow["causes"][0]


def test_a_retrain_records_its_diagnosis_and_warns_when_the_network_is_blind(tmp_path, caplog):
    cfg = override(NETWORK_PRESETS["tiny"], channels=4, batch_size=4, epochs=1)
    result = run_train(blind_genotype(), cfg, "synthetic:8", tmp_path / "run")
    assert "no temporal op" in caplog.text
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["diagnosis"] == result["diagnosis"] and set(last["diagnosis"]) >= {"learned", "causes", "chance"}
    if not last["diagnosis"]["learned"]:
        assert "did not learn" in caplog.text and "no temporal op" in last["diagnosis"]["causes"][0]
    evaluated = run_eval(tmp_path / "run" / "model.pt", "synthetic:8", views="1x1")  # one epoch: near chance
    assert evaluated["at_chance"] and "within 3 standard errors of chance" in caplog.text


def test_the_early_check_looks_after_the_warm_up_and_at_an_eighth_a_quarter_half_and_three_quarters_of_the_run():
    assert check_epochs(30, 2) == (2, 4, 8, 15, 23)
    assert check_epochs(196, 36) == (36, 49, 98, 147)  # the paper's Kinetics schedule: 1/8 falls inside the warm-up
    assert check_epochs(8, 1) == (1, 2, 4, 6) and check_epochs(2, 0) == (1,)


def test_early_check_flags_a_diverging_or_flat_run_and_not_a_learning_one():
    k, ln_k = 8, math.log(8)
    assert early_check(records([0.11], [4.1]), k, 30)["kind"] == "diverging"  # 4.1 > 1.5 ln 8
    assert early_check(records([0.11, 0.12], [2.0, math.nan]), k, 30)["kind"] == "diverging"
    flat = records([0.12] * 8, [ln_k] * 8)  # a quarter of 30 epochs at chance, the loss at ln 8
    warning = early_check(flat, k, 30)
    assert warning["kind"] == "not learning" and warning["epoch"] == 8 and "--seed" in warning["try"]
    assert early_check(flat[:4], k, 30) is None  # before a quarter of the run: too early to say
    assert early_check(records([0.12] * 7 + [0.30], [ln_k] * 7 + [1.9]), k, 30) is None  # it started learning
    fits = [{**r, "val_top1": 0.13, "val_videos": 160}  # training accuracy climbs, validation stays at chance
            for r in records([0.12] * 5 + [0.3, 0.4, 0.45, 0.5, 0.52, 0.55, 0.57, 0.58, 0.6, 0.62],
                             [ln_k] * 5 + [1.5 - 0.05 * i for i in range(10)])]
    warning = early_check(fits, k, 30)
    assert warning["kind"] == "memorising"  # half the run: training 0.62, validation at chance
    assert "training accuracy 0.620" in warning["saw"] and "validation top-1 0.130 on 160 videos" in warning["saw"]
    assert early_check(fits[:8], k, 30) is None  # a quarter: the runs that learned were still at chance here
    assert early_check([*fits[:14], {**fits[14], "val_top1": 0.29}], k, 30) is None  # validation left chance
    assert early_check([*fits[:14], {**fits[14], "val_videos": 4}], k, 30) is None  # 4 videos cannot tell
    assert early_check([*fits[:14], {**fits[14], "acc": 0.55}], k, 30) is None  # under halfway from chance to 1


# `order` v4, random genotype 4, retrain seed 1 (experiments/retrain_seeds.py, 128 validation videos): training
# accuracy creeps above chance for 27 epochs with validation at chance, then both jump (epoch 28: 0.36 and 0.41;
# epoch 32: 0.79 and 0.90).
LATE_TRAIN = [0.172, 0.18, 0.163, 0.174, 0.186, 0.184, 0.185, 0.201, 0.191, 0.197, 0.204, 0.195, 0.202, 0.216,
              0.211, 0.224, 0.216, 0.242, 0.233, 0.24, 0.247, 0.25, 0.256, 0.265, 0.275, 0.291, 0.311]
LATE_VAL = [0.172, 0.125, 0.164, 0.148, 0.164, 0.141, 0.188, 0.164, 0.156, 0.172, 0.188, 0.18, 0.172, 0.156, 0.148,
            0.195, 0.172, 0.227, 0.18, 0.148, 0.164, 0.148, 0.125, 0.141, 0.18, 0.125, 0.188]
LATE_LOSS = [1.897, 1.827, 1.82, 1.805, 1.804, 1.8, 1.797, 1.795, 1.801, 1.794, 1.794, 1.789, 1.797, 1.78, 1.783,
             1.77, 1.773, 1.754, 1.762, 1.752, 1.742, 1.752, 1.729, 1.718, 1.706, 1.692, 1.659]


def test_a_late_start_is_not_called_memorising():
    late = [{**r, "val_top1": v, "val_videos": 128} for r, v in zip(records(LATE_TRAIN, LATE_LOSS, 2400), LATE_VAL)]
    for at in range(20, 28):  # had any of these epochs been half of the run
        assert early_check(late[:at], 6, 2 * at) is None, at
    fits_on = [{**r, "epoch": 28 + i, "val_top1": 0.16, "val_videos": 128}
               for i, r in enumerate(records([0.45, 0.55, 0.6], [1.3] * 3, 2400))]
    assert early_check([*late, *fits_on], 6, 60)["kind"] == "memorising"  # the same run fitting on, nothing on val


def _dark_and_bright(root):
    """Two classes any network tells apart within an epoch: dark and bright clips (24 training, 8 test each)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 8)):
        for label, level in (("dark", 60), ("bright", 190)):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                frames = np.clip(level + rng.normal(0, 25, (8, 32, 32, 3)), 0, 255).astype(np.uint8)
                write_video(root / split / label / f"{i}.mp4", frames, 15)
    return f"folder:{root}"


def test_a_retrain_forced_to_fail_is_flagged_in_its_first_quarter_and_a_normal_one_is_not(tmp_path, caplog):
    data = _dark_and_bright(tmp_path / "data")
    cfg = override(NETWORK_PRESETS["tiny"], channels=4, epochs=8, warmup_epochs=1, lr=0.05, val_videos=8)
    warnings = {}
    for name, lr in (("normal", cfg.lr), ("lr x100", 100 * cfg.lr)):
        try:
            run_train(Genotype.random(0, min_conv=4), override(cfg, lr=lr), data, tmp_path / name)
        except NonFiniteLossError:  # lr x100 may reach NaN and stop (after its warning)
            assert name == "lr x100"
        metrics = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        warnings[name] = [r for r in metrics if "early_warning" in r]
        assert all("grad_norm" in r for r in metrics)
    assert warnings["normal"] == []
    (flagged,) = warnings["lr x100"]  # once, within the first quarter of the 8 epochs
    assert flagged["epoch"] <= 8 / 4 and flagged["early_warning"]["kind"] == "diverging"
    assert "lower --lr" in flagged["early_warning"]["try"] and caplog.text.count("this retrain looks") == 1
    page = build_report(tmp_path / "lr x100").read_text()  # the report says it too
    assert "Early warning (epoch" in page and "this retrain looks diverging" in page
