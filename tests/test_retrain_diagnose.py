"""A retrain that does not learn says so, with the likely cause read from its own records."""

import json
import math

from pvnas.config import NETWORK_PRESETS, override
from pvnas.retrain.diagnose import blind_to_motion, diagnose, temporal_ops
from pvnas.retrain.train import run_train
from pvnas.space.genotype import CellGenotype, Genotype

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
