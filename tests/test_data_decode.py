"""Decoding: exactly the requested frames, on every real clip and on generated containers/codecs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvnas.data.decode import CachedDecoder, DecodeError, PyAVDecoder, get_decoder
from pvnas.data.decode.pyav import _plan
from pvnas.errors import ConfigError


def _index_sets(n: int, rng: np.random.Generator) -> list[list[int]]:
    """Late frames, the last frame, repeats, unsorted sets, clip-like strided windows."""
    sets = [[n - 1], [0, n - 1], [n - 1, 0, n - 1], list(range(n))[::-1][:12]]
    for _ in range(6):
        sets.append(rng.integers(0, n, size=int(rng.integers(1, 9))).tolist())
        start = int(rng.integers(0, n))
        sets.append(np.minimum(start + 3 * np.arange(8), n - 1).tolist())
    return sets


DECODERS = {"pyav": PyAVDecoder, "cached": lambda: CachedDecoder(PyAVDecoder(), 1 << 30)}


@pytest.mark.parametrize("backend", DECODERS)
def test_read_is_frame_exact(any_video, reference_frames, backend):
    ref = reference_frames(any_video)
    decoder = DECODERS[backend]()
    info = decoder.info(any_video)
    assert info.num_frames == len(ref)
    assert (info.height, info.width) == ref.shape[1:3]
    for indices in _index_sets(len(ref), np.random.default_rng(len(ref))):
        out = decoder.read(any_video, indices)
        assert out.dtype == torch.uint8 and out.shape == (len(indices), *ref.shape[1:])
        assert np.array_equal(out.numpy(), ref[indices]), f"{any_video.name}: frames {indices} differ"


@pytest.mark.parametrize(
    "name", ["h264_bframes.mp4", "h264_open_gop.mp4", "h264.mkv", "vp9.webm", "mpeg4.avi", "vfr.mkv", "low_fps_5.mp4"]
)
def test_seekable_videos_never_decode_from_the_start(name, generated_videos, reference_frames, monkeypatch):
    """Late frames come from a seek to their keyframe (the sequential fallback is not used)."""
    path = generated_videos[name]
    ref = reference_frames(path)

    def no_sequential(*args, **kwargs):
        raise AssertionError("fell back to a sequential decode")

    monkeypatch.setattr(PyAVDecoder, "_sequential", no_sequential)
    decoder = PyAVDecoder()
    index = decoder._index(str(path))
    assert len(index.keys) > 1, "fixture should have several keyframes"
    late = [len(ref) - 1, len(ref) - 3, int(index.keys[-1])]
    assert np.array_equal(decoder.read(path, late).numpy(), ref[late])


def test_avi_with_b_frames_is_read_by_counting(real_clips, generated_videos):
    """AVI pts do not follow display order (the 'AVI trap'): such files are indexed in count mode."""
    decoder = PyAVDecoder()
    for path in (real_clips["apply_eye_makeup.avi"], generated_videos["mpeg4_bframes.avi"]):
        index = decoder._index(str(path))
        assert index.mode == "count" and len(index.keys) == 0
    assert len(decoder._index(str(generated_videos["mpeg4.avi"])).keys) > 1  # no B-frames: seekable


def test_rotation_metadata_is_applied(generated_videos, make_video, tmp_path):
    plain = make_video(tmp_path / "plain.mp4", 12, keyint=4)
    rotated = generated_videos["rotated_90.mp4"]
    decoder = PyAVDecoder()
    info = decoder.info(rotated)
    assert info.rotation == 90 and (info.width, info.height) == (64, 96)
    a, b = decoder.read(plain, [5]).numpy()[0], decoder.read(rotated, [5]).numpy()[0]
    assert b.shape == (96, 64, 3)
    # rotated_90 has other content (seed), so compare orientation on a re-encode of the same frames
    same = make_video(tmp_path / "same_rotated.mp4", 12, keyint=4, rotation=90)
    c = decoder.read(same, [5]).numpy()[0]
    assert np.abs(c.astype(int) - np.rot90(a).astype(int)).mean() < 2  # counter-clockwise, as players show it


def test_real_mov_reports_no_rotation(real_clips):
    info = PyAVDecoder().info(real_clips["three_frames_rotated.mov"])
    assert (info.num_frames, info.width, info.height, info.rotation) == (3, 568, 320, 0)


def test_info_fields(real_clips, generated_videos):
    decoder = PyAVDecoder()
    pancake = decoder.info(real_clips["flipping_pancake.mkv"])  # mkv: no frame count in the header
    assert pancake.num_frames == 310 and pancake.fps == pytest.approx(30, rel=0.01)
    assert pancake.duration == pytest.approx(10.33, abs=0.05)
    low = decoder.info(generated_videos["low_fps_5.mp4"])
    assert low.fps == pytest.approx(5) and low.duration == pytest.approx(4.0)
    odd = decoder.info(generated_videos["odd_97x71.avi"])
    assert (odd.width, odd.height) == (97, 71)


@pytest.mark.parametrize(
    "name, reason",
    [("empty.mp4", "empty"), ("text.mp4", "not a readable"), ("random.avi", "not a readable"),
     ("truncated.mp4", "not a readable"), ("audio_only.mp4", "no video stream")],
)  # fmt: skip
def test_bad_files_raise_decode_error(name, reason, bad_videos):
    decoder = PyAVDecoder()
    with pytest.raises(DecodeError, match=reason) as e:
        decoder.read(bad_videos[name], [0])
    assert name in str(e.value)


def test_missing_file_and_bad_indices(tmp_path, generated_videos):
    decoder = PyAVDecoder()
    with pytest.raises(DecodeError, match="file not found"):
        decoder.info(tmp_path / "nope.mp4")
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        decoder.read(generated_videos["low_fps_5.mp4"], [20])


def test_plan_groups_frames_by_keyframe():
    keys = np.array([0, 10, 20, 30])
    plan = _plan(np.array([1, 2, 12, 13, 19, 35]), keys)
    assert [(k, seg.tolist()) for k, seg in plan] == [(0, [1, 2]), (1, [12, 13, 19]), (3, [35])]
    # a frame whose keyframe is not after the current segment's end keeps decoding forward
    assert [k for k, _ in _plan(np.array([9, 11]), np.array([0, 10]))] == [0, 1]
    assert [(k, s.tolist()) for k, s in _plan(np.array([3, 5]), np.array([], dtype=np.int64))] == [(-1, [3, 5])]


def test_decoder_pickles_without_its_cache(generated_videos):
    import pickle

    decoder = PyAVDecoder(threads=1)
    decoder.info(generated_videos["h264.mkv"])
    clone = pickle.loads(pickle.dumps(decoder))
    assert clone.threads == 1 and not clone._cache


class CountingReads:
    """A PyAV decoder that counts reads and can fail whole-video reads (a damaged tail)."""

    name = "counting"

    def __init__(self, damaged_tail: bool = False) -> None:
        self.inner, self.damaged_tail, self.reads = PyAVDecoder(), damaged_tail, []

    def info(self, path):
        return self.inner.info(path)

    def read(self, path, indices):
        indices = list(indices)
        self.reads.append(len(indices))
        if self.damaged_tail and indices[-1] == self.info(path).num_frames - 1:
            raise DecodeError(path, "frames [19] could not be decoded")
        return self.inner.read(path, indices)


def test_cached_decoder_decodes_once_within_its_caps(generated_videos, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(generated_videos["low_fps_5.mp4"].read_bytes())
    info, other = PyAVDecoder().info(video), PyAVDecoder().info(generated_videos["h264.mkv"])
    whole = info.num_frames * info.height * info.width * 3
    counting = CountingReads()
    cached = CachedDecoder(counting, 64 * other.num_frames * other.height * other.width * 3)
    first, again = cached.read(video, [3, 1, 3]), cached.read(video, [0, 7])
    assert counting.reads == [info.num_frames] and cached.bytes == whole  # one whole decode serves both
    assert torch.equal(first, PyAVDecoder().read(video, [3, 1, 3]))
    assert torch.equal(again, PyAVDecoder().read(video, [0, 7]))
    with pytest.raises(ValueError, match=r"\[0, 20\)"):  # the wrapped decoder's error for indices out of range
        cached.read(video, [20])
    video.write_bytes(generated_videos["h264.mkv"].read_bytes())  # the file changed: decoded again
    assert torch.equal(cached.read(video, [1]), PyAVDecoder().read(video, [1]))
    assert counting.reads[-1] == other.num_frames and len(cached.videos) == 2
    for cap in (64 * whole - 1, whole):  # one video over 1/64 of the cap, or past what is left: frames as asked
        counting = CountingReads()
        small = CachedDecoder(counting, cap)
        small.read(generated_videos["low_fps_5.mp4"], [2, 4])
        small.read(generated_videos["low_fps_5.mp4"], [2, 4])
        assert counting.reads == [2, 2] and not small.videos
    damaged = CountingReads(damaged_tail=True)
    cached = CachedDecoder(damaged, 64 * whole)
    low = generated_videos["low_fps_5.mp4"]
    assert torch.equal(cached.read(low, [0, 2]), PyAVDecoder().read(low, [0, 2]))  # what the clip needs is read
    assert damaged.reads == [info.num_frames, 2] and not cached.videos


def test_cached_decoder_pickles_without_its_videos(generated_videos):
    import pickle

    cached = CachedDecoder(PyAVDecoder(threads=1), 1 << 30)
    cached.read(generated_videos["h264.mkv"], [0])
    clone = pickle.loads(pickle.dumps(cached))
    assert cached.videos and not clone.videos and clone.max_bytes == 1 << 30 and clone.inner.threads == 1


def test_get_decoder():
    assert get_decoder("pyav").name == "pyav"
    with pytest.raises(ConfigError, match="unknown decoder 'nope'"):
        get_decoder("nope")


def test_decord_backend_agrees_with_pyav(real_clips, generated_videos):
    pytest.importorskip("decord")
    decord, pyav = get_decoder("decord"), get_decoder("pyav")
    for path in (
        real_clips["cleaning_pool_32f.mp4"],
        real_clips["flipping_pancake.mkv"],
        generated_videos["rotated_90.mp4"],
    ):
        n = pyav.info(path).num_frames
        assert decord.info(path).num_frames == n
        indices = [n - 1, 0, n // 2, n // 2]
        a, b = pyav.read(path, indices).float(), decord.read(path, indices).float()
        assert a.shape == b.shape
        assert (a - b).abs().mean() < 3  # same frames; colour conversion may differ by a level or two
    with pytest.raises(DecodeError):
        decord.read(real_clips["cleaning_pool_32f.mp4"].parent / "README.md", [0])


# -- damaged files: the hardening found by benchmarks/fuzz_videos.py -----------------------------------


def _fuzz():
    """The fuzz campaign's file surgery (mp4 atoms, H.264 SPS), loaded from its script."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_videos.py"
    spec = importlib.util.spec_from_file_location("fuzz_videos_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _constant_size_samples(data: bytes, count: int) -> bytes:
    """An mp4 whose stsz declares ``count`` samples of one byte each (no table needed)."""
    fuzz = _fuzz()
    stsz, stsc = fuzz.mp4_atom(data, b"stsz"), fuzz.mp4_atom(data, b"stsc")
    data = fuzz.put_int(fuzz.put_int(data, stsz[0] + 12, ">I", 1), stsz[0] + 16, ">I", count)
    return fuzz.put_int(data, stsc[0] + 20, ">I", count)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d: _fuzz().mp4_with_coded_size(d, 16000, 16000), "size 15988x16000 is over the limit of 35.4 megapixels"),
        (lambda d: _fuzz().mp4_with_coded_size(d, 16000, 16), "frame size 15988x16: a side ratio over 16"),
        (lambda d: _constant_size_samples(d, 16777216), "the mp4 header declares 16777216 frames"),
        (lambda d: d[: d.rfind(b"avc1")] + b"zzzz" + d[d.rfind(b"avc1") + 4 :], "no decoder for its video codec"),
    ],
    ids=["16000x16000", "16000x16", "16M-samples", "unknown-codec"],
)  # fmt: skip
def test_absurd_headers_are_decode_errors(damage, reason, real_clips, tmp_path):
    """Sizes and counts no dataset holds cost FFmpeg gigabytes (6 GB for 3 frames of the first, 1 GB
    of index for the third): the decoder refuses them before it allocates, with a reason."""
    path = tmp_path / "absurd.mp4"
    path.write_bytes(damage(real_clips["cleaning_pool_32f.mp4"].read_bytes()))
    decoder = PyAVDecoder()
    for call in (decoder.info, lambda p: decoder.read(p, [0]), decoder.scan):
        with pytest.raises(DecodeError, match=reason):
            call(path)


def test_metadata_that_is_not_utf8_is_read(real_clips, tmp_path):
    """A damaged tag raised UnicodeDecodeError from av.open: a crash in a loader worker, not a skip."""
    data = bytearray(real_clips["flipping_pancake.mkv"].read_bytes())
    at = data.find(b"Lavf58", data.find(b"ENCODER"))
    data[at : at + 2] = b"\xff\xfe"
    path = tmp_path / "tag.mkv"
    path.write_bytes(bytes(data))
    decoder = PyAVDecoder()
    assert decoder.info(path).num_frames == 310 and decoder.read(path, [309]).shape == (1, 240, 426, 3)


def test_scan_counts_what_a_damaged_file_holds(real_clips, tmp_path):
    import av

    decoder = PyAVDecoder(threads=1)
    for name, frames in (("apply_eye_makeup.avi", 164), ("cleaning_pool_32f.mp4", 32), ("flipping_pancake.mkv", 0)):
        scan = decoder.scan(real_clips[name])
        assert (scan.header_frames, scan.corrupt, scan.errors) == (frames, 0, 0)
        assert scan.packets == scan.decoded == decoder.info(real_clips[name]).num_frames
    avi = real_clips["apply_eye_makeup.avi"]
    with av.open(str(avi)) as c:
        starts = [p.pos for p in c.demux(video=0) if p.size]
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi.read_bytes()[: starts[100] - 8])  # the first 100 packets, whole
    scan = decoder.scan(cut)
    assert (scan.header_frames, scan.packets, scan.decoded, scan.errors) == (164, 100, 100, 0)
