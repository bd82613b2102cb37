"""The task suite: deterministic clips of every task, its spec through the normal decode path, its sizes."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pvnas.config import SEARCH_PRESETS
from pvnas.data import build_dataset
from pvnas.data.datasets.tasks import study_slug
from pvnas.data.datasets.video import VideoDataset
from pvnas.data.generators import task_suite
from pvnas.data.generators.moving_patterns import CLASSES as MOTIONS
from pvnas.data.generators.moving_patterns import moving_pattern_clip
from pvnas.data.generators.single_frame import Frames, single_frame_check
from pvnas.data.generators.task_suite import FRAMES, SIZE, TASKS, get_task, render_clip
from pvnas.estimate.datasets import dataset_of
from pvnas.errors import ConfigError
from pvnas.space.ops import CELL_KINDS

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_renders_deterministic_distinct_clips(name):
    task = TASKS[name]
    assert len(set(task.classes)) == len(task.classes) >= 4 and set(task.needs) <= set(CELL_KINDS) and task.demands
    clip = render_clip(task, 1, 7)
    assert clip.shape == (FRAMES, SIZE, SIZE, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, render_clip(task, 1, 7))  # same seed, same clip
    assert not np.array_equal(clip, render_clip(task, 1, 8)) and not np.array_equal(clip, render_clip(task, 0, 7))
    assert clip.std() > 10  # not blank
    with pytest.raises(ValueError):
        render_clip(task, len(task.classes), 0)


def test_motion_tasks_move_and_appearance_shows_in_one_frame():
    """Consecutive frames differ where a class is motion; the first frame differs between appearance classes."""
    for name in ("motion", "order", "fine_motion", "appearance_motion"):
        clip = render_clip(TASKS[name], 0, 3).astype(float)
        assert np.abs(clip[-1] - clip[0]).mean() > np.abs(clip[1] - clip[0]).mean() * 0.5 > 0


def test_task_spec_is_written_once_and_read_like_user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PVNAS_CACHE", str(tmp_path))
    monkeypatch.setitem(TASKS, "order", dataclasses.replace(TASKS["order"], train_per_class=4, val_per_class=2))
    clip = SEARCH_PRESETS["demo"].clip
    train = build_dataset("task:order", "train", clip)
    task = get_task("order")
    assert isinstance(train, VideoDataset) and train.classes == sorted(task.classes)
    assert len(train) == task.train_size and len(build_dataset("task:order", "val", clip)) == task.val_size
    assert train.flip is False  # left and right are different classes
    x, label, _ = train[(3, 11)]
    assert x.shape == (3, clip.frames, clip.crop, clip.crop)
    assert dataset_of("task:appearance") == (TASKS["appearance"].train_size, "task:appearance (train split)", 8)
    assert not (tmp_path / f"task-v{TASKS['appearance'].version}" / "appearance-s0").exists()  # sizes known without writing it
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        build_dataset("task:nope", "train", clip)
    with pytest.raises(ConfigError, match="seed"):
        build_dataset("task:order?seed=x", "train", clip)
    fewer = build_dataset("task:order?train=2", "train", clip)  # fewer training clips, the same validation clips
    assert len(fewer) == 2 * len(task.classes) and (tmp_path / f"task-v{task.version}" / "order-s0-train2").is_dir()
    for bad, message in (("task:order?train=0", "N >= 1"), ("task:order?nope=1", "unknown option")):
        with pytest.raises(ConfigError, match=message):
            build_dataset(bad, "train", clip)



def test_a_task_whose_clips_change_gets_new_folders(tmp_path, monkeypatch):
    """A task's version names its clips' folder and the studies' cache folders: after a bump, nothing cached of the
    old clips (a tree, a search, a retrain) is reused."""
    monkeypatch.setenv("PVNAS_CACHE", str(tmp_path))
    old = TASKS["order"].version
    assert study_slug("task:order") == f"task_order_v{old}"
    fine = TASKS["fine_motion"].version
    assert study_slug("task:fine_motion?train=800&seed=2") == f"task_fine_motion_train800_seed2_v{fine}"
    assert study_slug("folder:/data/ucf?x=1") == "folder__data_ucf_x1" and study_slug("demo") == "demo"
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        study_slug("task:nope?train=3")
    small = dataclasses.replace(TASKS["order"], train_per_class=1, val_per_class=1)
    monkeypatch.setitem(TASKS, "order", small)
    build_dataset("task:order", "train", SEARCH_PRESETS["demo"].clip)
    monkeypatch.setitem(TASKS, "order", dataclasses.replace(small, version=old + 1))
    build_dataset("task:order", "train", SEARCH_PRESETS["demo"].clip)
    assert {p.name for p in tmp_path.iterdir()} == {f"task-v{old}", f"task-v{old + 1}"}
    assert study_slug("task:order") == f"task_order_v{old + 1}"
    with pytest.raises(ValueError, match="version must be >= 1"):
        dataclasses.replace(small, version=0)


def test_studies_search_on_the_tasks_search_split(monkeypatch):
    """A task's studies search on its first search_per_class training clips per class (a ``?train=N`` spec, whose
    clips are the first N of the full split's); a spec naming its own split, or other data, is searched as given."""
    monkeypatch.setitem(TASKS, "order", dataclasses.replace(TASKS["order"], train_per_class=9, search_per_class=3))
    monkeypatch.setitem(TASKS, "motion", dataclasses.replace(TASKS["motion"], search_per_class=0))
    assert task_suite.search_spec("task:order") == "task:order?train=3"
    assert task_suite.search_spec("task:order?seed=2") == "task:order?seed=2&train=3"
    assert task_suite.search_spec("task:order?train=5&seed=1") == "task:order?train=5&seed=1"
    assert task_suite.search_spec("task:motion") == "task:motion" and task_suite.search_spec("demo") == "demo"
    assert task_suite.search_spec("folder:/d/train=3") == "folder:/d/train=3"
    with pytest.raises(ValueError, match="search_per_class must be >= 0"):
        dataclasses.replace(TASKS["order"], search_per_class=-1)

def _clean(monkeypatch):
    """Every task's scene without what is independent of the class (background texture, distractor blobs and dots,
    noise, flicker): what is left of a frame (the object, the texture's motion) is all it could tell."""
    monkeypatch.setattr(task_suite, "_texture", lambda rng, size, cells: np.full((size, size, 3), 0.5, np.float32))
    monkeypatch.setattr(task_suite, "_blobs", lambda rng, count=3: [])
    monkeypatch.setattr(task_suite, "_finish", lambda video, rng, noise: video)
    monkeypatch.setattr(task_suite, "FINE_DISTRACTORS", 0)


def _frame_check(render, classes: int, train: int, test: int, label_of=lambda y: y):
    """The single-frame classifier on ``train`` clips per class (4 frames each, with their time in the clip) and
    one frame of each of ``test`` held-out clips per class."""
    rng = np.random.default_rng(0)
    fit = [(render(i % classes, i), i % classes) for i in range(train * classes)]
    held = [(render(i % classes, 10**6 + i), i % classes) for i in range(test * classes)]
    a = Frames.of_clips([c for c, _ in fit], [label_of(y) for _, y in fit], rng, per_clip=4)
    b = Frames.of_clips([c for c, _ in held], [label_of(y) for _, y in held], rng, per_clip=1)
    return single_frame_check(a, b, len({label_of(y) for y in range(classes)}))


BLIND = [name for name, task in TASKS.items() if task.frame_blind is not None]
CLIPS = {"order": 60, "motion": 30, "appearance_motion": 20}  # clips per class (training and test) where 40 is
# too little power (order: a position leak is weak) or more than needed (motion: rendering costs; 9 classes)


@pytest.mark.parametrize("name", BLIND)
def test_no_single_frame_tells_what_the_task_says_it_does_not(name, monkeypatch):
    """A 2D CNN that sees one frame, its time in the clip and where each pixel is stays within 2 standard errors
    of chance on what no single frame should tell (README: the class where it says "nothing", the direction of
    `appearance_motion`). The clutter is removed (it is independent of the class: a frame with it tells no more),
    so the CNN sees the object or texture alone."""
    _clean(monkeypatch)
    task = TASKS[name]
    clips = CLIPS.get(name, 40)
    check = _frame_check(lambda y, s: render_clip(task, y, s), len(task.classes), clips, clips,
                         label_of=task.frame_blind.__getitem__)
    assert check.at_chance(), f"{name}: one frame tells what it should not: {check.to_dict()}"


def test_no_single_frame_tells_a_demo_motion():
    check = _frame_check(lambda y, s: moving_pattern_clip(y, s, frames=8, size=32), len(MOTIONS), 30, 30)
    assert check.at_chance(), check.to_dict()


def test_the_readme_table_says_what_each_task_claims():
    """The README's task table states each task's single-frame claim and training split as the code has them."""
    lines = README.read_text().splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| task | classes |")).split("|")]
    frame, train = header.index("a single frame tells"), header.index("training clips per class")
    epochs, search = header.index("retrain epochs"), header.index("searched on (per class)")
    rows = {cells[1].strip(" `"): (cells[frame].strip(), int(cells[train]), int(cells[epochs]), cells[search].strip())
            for cells in (line.split("|") for line in lines if line.startswith("| `")) if cells[1].strip(" `") in TASKS}
    assert rows == {name: ({"the shape": "half of it"}.get(t.single_frame, t.single_frame), t.train_per_class,
                           t.retrain_epochs, str(t.search_per_class or "all")) for name, t in TASKS.items()}


def test_studies_retrain_each_task_for_its_own_length():
    """A task spec, whatever its options, gives the task's retrain length; other data the suite's default; a task
    the suite lacks is the spec's usual error."""
    assert task_suite.retrain_epochs("task:fine_motion") == TASKS["fine_motion"].retrain_epochs == 60
    assert task_suite.retrain_epochs("task:fine_motion?seed=2&train=200") == 60
    assert task_suite.retrain_epochs("task:appearance") == task_suite.retrain_epochs("synthetic:16") == 30
    assert task_suite.retrain_epochs("folder:/data/fine_motion") == task_suite.RETRAIN_EPOCHS
    with pytest.raises(ConfigError, match="unknown task"):
        task_suite.retrain_epochs("task:nope")
    with pytest.raises(ValueError, match="retrain_epochs"):
        dataclasses.replace(TASKS["order"], retrain_epochs=0)


@pytest.mark.parametrize("motion", ["shift_right", "shift_up", "rotate_cw", "rotate_ccw"])
def test_demo_motions_move_the_texture_as_their_names_say(motion):
    """Known answers on a 2-frame clip (its frames one unit of time apart): a shift by speed x size / 2 = 8 pixels,
    a rotation by speed x 90 degrees; the texture is evaluated exactly, so pixels match to rounding."""
    speed = 0.5 if motion.startswith("shift") else 1.0
    f0, f1 = moving_pattern_clip(MOTIONS.index(motion), 3, frames=2, size=32, speed_range=(speed, speed)).astype(int)
    before, after = {"shift_right": (f0[:, :-8], f1[:, 8:]), "shift_up": (f0[8:], f1[:-8]),
                     "rotate_cw": (np.rot90(f0), f1), "rotate_ccw": (np.rot90(f0, -1), f1)}[motion]
    assert f0.std() > 20 and np.abs(after - before).max() <= 1


@pytest.mark.parametrize("motion", ["zoom_in", "zoom_out"])
def test_demo_zooms_scale_the_texture_about_the_centre(motion):
    """Speed ln 3: the wider frame's pixel (i, j) is the magnified one's (3i + 1 - S, 3j + 1 - S)."""
    size, speed = 33, float(np.log(3))
    f0, f1 = moving_pattern_clip(MOTIONS.index(motion), 5, frames=2, size=size, speed_range=(speed, speed)).astype(int)
    wide, magnified = (f0, f1) if motion == "zoom_in" else (f1, f0)
    idx = np.arange(11, 22)  # where 3i + 1 - S stays in the frame
    assert np.abs(wide[np.ix_(idx, idx)] - magnified[np.ix_(3 * idx + 1 - size, 3 * idx + 1 - size)]).max() <= 1


def test_objects_move_their_class_way_and_frames_differ_by_it(monkeypatch):
    """Noise and flicker off, the frames of `order` and `appearance_motion` differ only by the object, whose path
    follows its class: the first direction over the first third of `order`, the second over the last third."""
    paths = []
    real = task_suite._moving_shape
    monkeypatch.setattr(task_suite, "_moving_shape", lambda *a: paths.append(np.array(a[3])) or real(*a))
    monkeypatch.setattr(task_suite, "_finish", lambda video, rng, noise: video)
    third = FRAMES // 3
    for label, (first, second) in enumerate(task_suite.ORDERS):
        clip = render_clip(TASKS["order"], label, 11 + label).astype(int)
        path = paths[-1]
        for move, step in ((first, path[third] - path[0]), (second, path[-1] - path[FRAMES - 1 - third])):
            direction = np.array(task_suite.ORDER_MOVES[move])
            assert step @ direction > 0.8 * np.linalg.norm(step) and np.linalg.norm(step) > 0.8 * third
        moved = [np.abs(clip[t + 1] - clip[t]).max() > 50 for t in range(FRAMES - 1)]
        assert sum(moved) >= FRAMES - 3  # (a step of 1 px with 0.3 px of jitter may change no pixel)
    for label in range(len(TASKS["appearance_motion"].classes)):
        clip = render_clip(TASKS["appearance_motion"], label, 3 + label).astype(int)
        move = task_suite.APPEARANCE_MOTION_MOVES[label % len(task_suite.APPEARANCE_MOTION_MOVES)]
        step = paths[-1][-1] - paths[-1][0]
        assert step @ np.array(task_suite.ORDER_MOVES[move]) > 0.8 * np.linalg.norm(step)
        assert np.linalg.norm(step) > 0.8 * 0.5 * (FRAMES - 1)  # at least 0.5 px per frame
        assert np.abs(clip[-1] - clip[0]).max() > 50


def test_fine_motion_dot_moves_its_class_way(monkeypatch):
    """Without the look-alike dots and the noise, the brightest spot of each frame is the steady 3x3 dot: it moves
    0.5-0.8 px per frame in the class's direction (on the torus), less than its size between the demo presets' 4
    sampled frames (suite v3: faster, smaller dots were learned by no retrain)."""
    monkeypatch.setattr(task_suite, "_finish", lambda video, rng, noise: video)
    monkeypatch.setattr(task_suite, "FINE_DISTRACTORS", 0)
    for label, name in enumerate(task_suite.FINE_DIRECTIONS):
        clip = render_clip(TASKS["fine_motion"], label, 7).astype(int).sum(-1)
        spots = np.array([np.unravel_index(np.argmax(f), f.shape) for f in clip])
        step = (spots[-1] - spots[0] + SIZE // 2) % SIZE - SIZE // 2  # the shortest way round the torus
        direction = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[name]
        along = step @ np.array(direction)
        assert 0.5 * (FRAMES - 1) - 1 <= along <= 0.8 * (FRAMES - 1) + 1 and abs(step @ np.array(direction[::-1])) <= 1
        assert (clip[0] == clip[0].max()).sum() == 3 * 3  # one 3x3 dot, nothing else as bright


def test_validation_splits_hold_the_evaluation_noise_to_two_points():
    for task in TASKS.values():
        assert (0.25 / task.val_size) ** 0.5 <= task_suite.EVAL_STD  # the binomial std at its largest, p = 0.5
