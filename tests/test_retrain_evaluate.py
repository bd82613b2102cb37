"""Multi-view testing: view parsing, aggregation on hand-made scores, top-k, chunking."""

import pytest
import torch

import pvnas
from pvnas.config import EvalConfig
from pvnas.data.loader import Batch, Skipped
from pvnas.retrain.evaluate import (
    aggregate_views, evaluate, parse_views, per_class, sanitise, topk_hits, view_logits,
)
from pvnas.errors import ConfigError


def test_parse_views():
    assert parse_views("10x3") == (10, 3)
    assert parse_views("1X1") == (1, 1)
    for bad in ("10", "ax3", "10x3x1", ""):
        with pytest.raises(ConfigError, match="--views"):
            parse_views(bad)
    for clips, crops in ((0, 3), (2, 0)):
        with pytest.raises(ConfigError, match=r"views \(--views\) must be CLIPSxCROPS with both >= 1"):
            EvalConfig(clips=clips, crops=crops)


def test_aggregate_views_known_answer():
    # 1 video, 3 clips x 3 crops, 3 classes; views clip-major: view 3*c + s
    probs = torch.zeros(1, 9, 3)
    probs[0, :, 0] = 1.0  # every view says class 0 ...
    for c in range(3):
        probs[0, 3 * c + 1] = torch.tensor([0.0, 1.0, 0.0])  # ... except the centre crops: class 1
    probs[0, 3 * 1 + 1] = torch.tensor([0.0, 0.0, 1.0])  # and the centre clip's centre crop: class 2
    out = aggregate_views(probs, 3, 3)
    assert list(out) == ["1x1", "3x1", "3x3"]
    torch.testing.assert_close(out["1x1"], torch.tensor([[0.0, 0.0, 1.0]]))
    torch.testing.assert_close(out["3x1"], torch.tensor([[0.0, 2 / 3, 1 / 3]]))
    torch.testing.assert_close(out["3x3"], torch.tensor([[6 / 9, 2 / 9, 1 / 9]]))
    assert [int(v.argmax()) for v in out.values()] == [2, 1, 0]


def test_aggregate_views_degenerate_grids_and_shape_check():
    probs = torch.softmax(torch.randn(4, 2, 5), -1)
    assert list(aggregate_views(probs, 2, 1)) == ["1x1", "2x1"]  # Tx1 == TxS: listed once
    assert list(aggregate_views(probs[:, :1], 1, 1)) == ["1x1"]
    with pytest.raises(ValueError, match="expected clips x crops"):
        aggregate_views(probs, 3, 1)


def test_topk_hits():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_hits(scores, labels, (1, 2, 5)) == {1: 1, 2: 1, 5: 3}  # k capped at the 3 classes


def test_view_logits_do_not_depend_on_chunk_size():
    net = pvnas.build_network(pvnas.Genotype.random(1, min_conv=4), "tiny", num_classes=4, channels=4).eval()
    views = torch.randn(3, 2, 3, 4, 32, 32)
    a = view_logits(net, views, 1, torch.device("cpu"))
    b = view_logits(net, views, 100, torch.device("cpu"))
    assert a.shape == (3, 2, 4)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class Oracle(torch.nn.Module):
    """Logits read off the clip: class = the value at [0, 0, 0, 0] (the test puts it there)."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0, 0, 0, 0].long(), 3).float() * 10


def test_evaluate_counts_videos_views_and_skips():
    views = torch.zeros(2, 3, 3, 1, 2, 2)  # 2 videos x (3 clips x 1 crop)
    views[0, :, 0, 0, 0, 0] = 1  # video 0 (label 1): every clip says 1
    views[1, [0, 2], 0, 0, 0, 0] = 2  # video 1 (label 2): clips say 2, 0, 2 -> its middle clip is wrong
    batches = [Batch(views, torch.tensor([1, 2]), torch.tensor([0, 1]), (Skipped("bad.mp4", "empty"),))]
    result = evaluate(Oracle(), batches, 3, 1, torch.device("cpu"))
    assert result["videos"] == 2 and result["skipped"] == 1 and result["skipped_files"] == ["bad.mp4"]
    assert result["by_views"]["1x1"] == {"top1": 0.5, "top5": 1.0}
    assert result["by_views"]["3x1"] == {"top1": 1.0, "top5": 1.0}
    assert (result["top1"], result["top5"]) == (1.0, 1.0)


def test_sanitise():
    assert sanitise("synthetic") == "synthetic"
    assert sanitise("ucf101:/data/ucf?split=2") == "ucf101_data_ucf_split_2"


def test_confusion_and_per_class_known_answer():
    """Rows are true classes, columns predictions (all views averaged): 3 videos, one of class 2 taken for 0."""
    views = torch.zeros(3, 1, 3, 1, 2, 2)
    views[0, :, 0, 0, 0, 0] = 1  # label 1, predicted 1
    views[1, :, 0, 0, 0, 0] = 0  # label 2, predicted 0
    views[2, :, 0, 0, 0, 0] = 0  # label 0, predicted 0
    batches = [Batch(views, torch.tensor([1, 2, 0]), torch.tensor([0, 1, 2]), ())]
    result = evaluate(Oracle(), batches, 1, 1, torch.device("cpu"))
    assert result["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert per_class(result["confusion"], ["a", "b", "c"]) == {
        "a": {"videos": 1, "top1": 1.0}, "b": {"videos": 1, "top1": 1.0}, "c": {"videos": 1, "top1": 0.0}}
    assert per_class([[0, 0], [0, 2]], ["a", "b"])["a"] == {"videos": 0, "top1": None}
