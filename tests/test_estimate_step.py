"""``pvnas estimate``: never a step that does not fit in memory, an out-of-memory an answer, warm-up never timed,
no linear scaling where a device does not scale linearly, the run's threads; the activations counted in the
step's dtype; the retrain estimate, loading throughput and the CLI errors."""

import json
import mmap

import pytest
import torch

from pvnas.cli import main
from pvnas.estimate import memory, step as est
from pvnas.estimate.loading import clips_per_second_per_worker, loading_plan
from pvnas.estimate.memory import counted_activations_mb
from pvnas.estimate.step import cost_step
from pvnas.nn.fast.policy import generic_kernels
from pvnas.space.genotype import Genotype

CLIP_MB = 40  # what the fake step below holds per clip
CPU = torch.device("cpu")


class FakeDevice:
    """A step of b clips that really holds b x 40 MiB (pages touched, so resident) for a moment, and takes
    ``fixed + per_clip * b`` seconds, ``cold`` times that on the first ``cold_calls`` calls at each batch
    (algorithm selection, compilation), on a fake clock: timing rules are tested exactly, whatever the machine's
    load. From batch ``oom_at`` on it runs out of memory, as CUDA says it."""

    def __init__(self, per_clip: float = 1.0, fixed: float = 0.0, cold: float = 3.0, mb: int = CLIP_MB,
                 cold_calls: int = 1, oom_at: int | None = None) -> None:
        self.per_clip, self.fixed, self.cold, self.mb, self.cold_calls = per_clip, fixed, cold, mb, cold_calls
        self.oom_at, self.now, self.ran = oom_at, 0.0, []

    def clock(self) -> float:
        return self.now

    def step(self, b: int) -> None:
        if self.oom_at is not None and b >= self.oom_at:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {b} GiB")
        self.now += (self.fixed + self.per_clip * b) * (1.0 if self.ran.count(b) >= self.cold_calls else self.cold)
        self.ran.append(b)
        with mmap.mmap(-1, b * self.mb * 2**20) as pages:  # fresh pages: resident whatever the allocator holds
            pages[:: mmap.PAGESIZE] = b"\1" * len(range(0, len(pages), mmap.PAGESIZE))


def cost(dev: FakeDevice, batch: int, linear: bool, **kw):
    kw = {"activations_mb": (CLIP_MB, CLIP_MB), "state_mb": 0, "steps": 3, "time_budget": 60, **kw}
    return cost_step(dev.step, batch, device=CPU, linear=linear, clock=dev.clock, **kw)


@pytest.mark.parametrize("linear", [True, False], ids=["cpu", "gpu"])
def test_warm_up_is_not_timed_and_the_requested_batch_is_measured(linear):
    dev = FakeDevice(per_clip=1.0, fixed=0.5, cold=1.5)
    c = cost(dev, 3, linear)
    assert c.step_seconds == pytest.approx(3.5) and c.step_seconds_source == "measured"  # no cold step timed
    assert c.measured_batch == 3 and c.timed_steps >= 3
    # a CPU probes memory and time at 1 and 2, then grows to the batch (its first step there is the warm-up);
    # a GPU, sure of memory, runs the batch at once, two warm-ups
    assert dev.ran[:3] == ([1, 2, 3] if linear else [3, 3, 3]) and c.warmup_steps == (0 if linear else 2)
    assert c.fits_in_memory and c.peak_step_memory_source == "measured" and c.peak_step_memory_mb >= 2.5 * CLIP_MB


@pytest.mark.parametrize("linear,cold_calls,budget", [(True, 1, 150), (False, 2, 0)], ids=["cpu", "gpu"])
def test_no_warm_up_step_is_timed(linear, cold_calls, budget):
    """A GPU's first two steps at a batch are cold (cudnn.benchmark, compilation), a CPU's first: none of them is
    timed. Counted, not inferred from the median (which hides one cold step among three): the batch timed ran
    its warm-up steps more often than it was timed; and with one timed step (the GPU: no budget for more) that
    step is the warm one."""
    dev = FakeDevice(per_clip=1.0, fixed=0.5, cold=10.0, cold_calls=cold_calls, mb=1)
    c = cost(dev, 3, linear, steps=1, time_budget=budget)
    assert c.measured_batch == 3 and c.measured_step_seconds == pytest.approx(3.5), (c, dev.ran)
    assert dev.ran.count(3) == c.timed_steps + cold_calls and (budget > 0 or c.timed_steps == 1)


def test_timed_steps_fill_the_budget_up_to_the_cap():
    dev = FakeDevice(per_clip=0.1, fixed=0.0, cold=1.0, mb=1)
    c = cost(dev, 2, linear=False, time_budget=5)
    assert 3 < c.timed_steps < est.MAX_TIMED_STEPS and dev.now <= 5 + 0.2 + 2 * 1.0  # (ends within one step)
    dev = FakeDevice(per_clip=0.01, fixed=0.0, cold=1.0, mb=1)  # a budget for 1000 steps: the cap stops them
    c = cost(dev, 2, linear=False, time_budget=20)
    assert c.timed_steps == est.MAX_TIMED_STEPS == 30 and dev.ran.count(2) == 30 + 2


@pytest.mark.parametrize("linear", [True, False], ids=["cpu", "gpu"])
def test_an_out_of_memory_step_is_an_answer_with_the_largest_batch_that_ran(linear, monkeypatch):
    monkeypatch.setattr(est, "available_mb", lambda device: 1e6)  # predicted to fit: only running says otherwise
    dev = FakeDevice(per_clip=0.1, mb=1, oom_at=3)
    c = cost(dev, 8, linear)
    assert c.step_seconds is None and c.step_seconds_source == ("not measured: out of memory at batch "
                                                                + ("4" if linear else "8"))
    assert not c.fits_in_memory and c.max_batch == (2 if linear else 0) and c.timed_steps == 0


def test_a_gpu_never_scales_a_small_batch_linearly(monkeypatch):
    monkeypatch.setattr(est, "available_mb", lambda device: 400.0)  # 0.9 x 400 MiB: 9 clips minus slack
    dev = FakeDevice()
    c = cost(dev, 64, linear=False)
    assert not c.fits_in_memory and 4 <= c.max_batch <= 9 and max(dev.ran) <= c.max_batch, (c, dev.ran)
    assert c.step_seconds is None and "does not scale linearly" in c.step_seconds_source
    assert c.measured_batch == c.max_batch and c.measured_step_seconds == pytest.approx(c.max_batch)


def test_a_cpu_scales_a_batch_that_does_not_fit_and_never_runs_it(monkeypatch):
    monkeypatch.setattr(est, "available_mb", lambda device: 400.0)
    dev = FakeDevice(per_clip=1.0, cold=1.5)
    c = cost(dev, 64, linear=True, time_budget=100)
    assert dev.ran[:2] == [1, 2] and max(dev.ran) <= c.max_batch and not c.fits_in_memory
    assert c.step_seconds == pytest.approx(64.0) and c.step_seconds_source.startswith("extrapolated from batch")
    assert c.peak_step_memory_mb > 0.9 * 400 and c.peak_step_memory_source.startswith("extrapolated")


def test_a_cpu_times_a_smaller_batch_when_the_budget_cannot_time_the_requested_one():
    dev = FakeDevice(per_clip=2.0, cold=1.5, mb=1)  # batch 16: 32 s a step, 4 steps do not fit in 30 s
    c = cost(dev, 16, linear=True, time_budget=30)
    assert c.fits_in_memory and c.measured_batch < 16 and c.step_seconds == pytest.approx(32.0)
    dev = FakeDevice(per_clip=0.1, cold=1.5, mb=1)  # batch 16: 1.6 s a step: grown to it by doubling, measured
    c = cost(dev, 16, linear=True, time_budget=30)
    assert c.measured_batch == 16 and dev.ran[:5] == [1, 2, 4, 8, 16] and c.step_seconds == pytest.approx(1.6)


def test_a_cpu_scales_a_step_with_a_fixed_part_by_its_line_not_in_proportion():
    # a tiny network: 1 s of per-op overhead, 0.01 s per clip; the budget allows no timing at batch 8
    dev = FakeDevice(per_clip=0.01, fixed=1.0, cold=1.5, mb=1)
    c = cost(dev, 8, linear=True, time_budget=12)
    assert 2 <= c.measured_batch < 8 and c.step_seconds == pytest.approx(1.08, rel=0.02), (c, dev.ran)


def test_nothing_runs_when_one_clip_does_not_fit(monkeypatch):
    monkeypatch.setattr(est, "available_mb", lambda device: 100.0)
    for linear in (True, False):
        dev = FakeDevice()
        c = cost(dev, 8, linear, state_mb=50)
        assert dev.ran == [] and c.step_seconds is None and c.max_batch == 0 and not c.fits_in_memory


def test_batch_2_is_probed_only_if_batch_1_says_it_fits(monkeypatch):
    monkeypatch.setattr(est, "available_mb", lambda device: 110.0)  # batch 1 (~40 MiB, 80 predicted) fits, 2 not
    dev = FakeDevice()
    c = cost(dev, 4, linear=True)
    assert 2 not in dev.ran and set(dev.ran) == {1} and c.max_batch == 1 and not c.fits_in_memory


def test_loading_throughput_is_measured_on_the_data_and_planned_per_worker():
    from pvnas.config import SEARCH_PRESETS

    measured = clips_per_second_per_worker("synthetic:8", SEARCH_PRESETS["tiny"].clip, seconds=0.5)
    assert measured["measured"] and measured["clips_per_s_per_worker"] > 0 and measured["clips_decoded"] >= 1
    assert not clips_per_second_per_worker("kinetics:/absent", SEARCH_PRESETS["tiny"].clip)["measured"]
    plan = loading_plan({"measured": True, "clips_per_s_per_worker": 10.0}, batch=32, step_seconds=0.2, workers=8)
    assert plan["clips_per_s_needed"] == pytest.approx(160) and plan["workers_needed"] == 16 and not plan["keeps_up"]
    assert loading_plan({"measured": True, "clips_per_s_per_worker": 50.0}, 8, 1.0, 1)["keeps_up"]


def test_counted_activations_are_linear_in_the_batch_and_allocate_nothing():
    import pvnas

    genotype = Genotype.random(1, min_conv=4)
    build = lambda: pvnas.build_network(genotype, "tiny", num_classes=5)  # noqa: E731
    one, per_clip = counted_activations_mb(build, (3, 4, 32, 32), CPU)
    assert one > 0 and per_clip > 0.9 * one  # nearly everything autograd keeps grows with the batch
    torch.manual_seed(0)
    real = memory.activation_bytes(build(), torch.randn(2, 3, 4, 32, 32)) / 2**20
    assert real == pytest.approx(one + per_clip, rel=0.01)


def test_activations_are_counted_in_the_dtype_the_step_runs_in():
    """Under bf16 autocast (CUDA's steps) convolutions save bf16 inputs: the count is torch's own autocast on fake
    tensors, so it equals what a real bf16 forward saves, about half the float32 count (here on CPU autocast, with
    the generic kernels a GPU takes)."""
    import pvnas

    genotype = Genotype.random(1, min_conv=4)
    build = lambda: pvnas.build_network(genotype, "tiny", num_classes=5)  # noqa: E731
    with generic_kernels():
        fp32 = sum(counted_activations_mb(build, (3, 4, 32, 32), CPU))
        bf16 = sum(counted_activations_mb(build, (3, 4, 32, 32), CPU, torch.bfloat16))
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            real = memory.activation_bytes(build(), torch.randn(2, 3, 4, 32, 32)) / 2**20
    assert bf16 == pytest.approx(real, rel=0.01) and 0.4 * fp32 < bf16 < 0.65 * fp32, (fp32, bf16, real)


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("estimate") / "g.json"
    Genotype.random(1, min_conv=4).save(path)
    return str(path)


def test_retrain_estimate_cli_projects_training_and_test_time(genotype_file, capsys):
    assert main(["estimate", "--genotype", genotype_file, "--preset", "tiny", "--batch", "2", "--data", "synthetic:10",
                 "--epochs", "3", "--steps", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "retrain" and out["impl"] == "fast" and out["params"] > 0 and out["gmacs_per_view"] > 0
    assert (out["dataset_size"], out["val_size"], out["num_classes"], out["epochs"]) == (10, 8, 8, 3)
    assert out["fits_in_memory"] and out["step_seconds_source"] == "measured" and out["steps_per_epoch"] == 5
    assert out["loading"]["measured"] and out["loading"]["workers_needed"] >= 1
    # tiny loads in the main process (no workers): each step waits for its batch to be decoded
    loading = 2 / out["loading"]["clips_per_s_per_worker"]
    assert out["workers"] == 0 and out["run_step_seconds"] == pytest.approx(out["step_seconds"] + loading)
    assert out["train_seconds"] == pytest.approx(3 * (5 * out["run_step_seconds"] + out["val_seconds_per_epoch"]))
    assert out["test_views"] == 6  # tiny: 2 clips x 3 crops
    assert out["test_seconds"] == pytest.approx(8 * 6 * out["eval_seconds_per_clip"])


def test_retrain_epochs_default_to_the_datasets(genotype_file, capsys):
    assert main(["estimate", "--genotype", genotype_file, "--preset", "tiny", "--batch", "1", "--steps", "1",
                 "--data", "ucf101:/absent", "--channels", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 2 and out["val_size"] == 3783 and "official val split" in out["val_size_source"]


@pytest.mark.parametrize("args,message", [
    (["--genotype", "{g}", "--batch", "0"], "--batch must be >= 1, got 0"),
    (["--genotype", "{g}", "--preset", "search"], "unknown preset 'search'; expected one of: L, M, tiny, demo"),
    (["--genotype", "/absent/g.json"], "g.json: genotype file not found"),
    (["--genotype", "{g}", "--partial-channels", "4"], "--partial-channels is a search setting"),
    (["--repeats", "2"], "--repeats is a retrain setting"),
    (["--preset", "L"], "unknown preset 'L'; expected one of: search, tiny, demo"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
])
def test_bad_estimate_input_is_one_line_and_exit_2(args, message, genotype_file, capsys):
    assert main(["estimate", *[a.format(g=genotype_file) for a in args]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
