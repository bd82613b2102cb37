"""The PyAV backend (the default: pip-only, FFmpeg inside the wheel): exact frames by index, decoding only what
is needed.


A clip needs 8 frames out of a 64-frame window, so decoding a whole 10-second video for it wastes
most of the work. The PyAV backend seeks to the keyframe before the first needed frame and
decodes forward only up to the last one. Frames are identified by their index in display order,
i.e. their position in a plain sequential decode; the mapping comes from a demux pass over the
file that lists every packet and decodes only the first frame (for the rotation, and to prove
the file decodes), cached per path:

* ``pts`` mode (mp4, mov, mkv, webm, ...): frame ``i`` is the one whose pts is the ``i``-th
  smallest packet pts, so a decoded frame is placed by its own timestamp, whatever the seek did.
  This survives B-frames, edit lists and gaps in the timestamps (frame rates are never used to
  compute positions).
* ``count`` mode (AVI, and streams without usable pts): AVI has no presentation timestamps;
  the pts FFmpeg guesses for B-frame (e.g. XviD packed-bitstream) streams do not follow display
  order, so frames are identified by counting decoder output instead. Without B-frames, display
  order is decode order and the reader seeks to a keyframe whose decode position is known from
  its dts; with B-frames it decodes sequentially from the start (still stopping at the last
  needed frame). ``pvnas prepare`` re-encodes such files into cheaply seekable ones.

Rotation metadata (phones, ``.mov``) is applied: frames come out the way players show them.

Every file passes :mod:`~pvnas.data.decode.guards` first.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from torch.utils.data import get_worker_info

from pvnas.data.decode.decoder import DecodeError, VideoInfo, VideoScan, rotate_frames
from pvnas.data.decode.guards import CODEC_OPTIONS, MAX_PACKETS, check_declared_samples, check_size, open_input

logger = logging.getLogger(__name__)

_COUNT_MODE_FORMATS = frozenset({"avi"})  # containers whose packet pts do not give display order


@dataclass(frozen=True)
class _Index:
    """Result of the demux-only pass over one file."""

    info: VideoInfo
    mode: str  # "pts" or "count"
    pts: np.ndarray  # pts mode: sorted pts of every frame (display order); count mode: empty
    keys: np.ndarray  # display indices of the keyframes we may seek to (sorted; empty: no seeking)
    key_ts: np.ndarray  # timestamp to pass to seek() for each key (pts mode: pts; count mode: dts)
    dts: np.ndarray  # count mode: dts of every packet in decode order (to locate a seek's landing)
    coded: tuple[int, int]  # stored (width, height), before rotation



class PyAVDecoder:
    """The default backend (pip-only, bundles FFmpeg). See the module docstring for the strategy.

    ``threads=0`` means one decoding thread inside a DataLoader worker (the workers already keep
    the cores busy; measured ~10% faster with 2 workers on 2 cores) and FFmpeg's choice (frame +
    slice threading, ``thread_type="AUTO"``) elsewhere. The per-path index cache is per process
    (persistent loader workers keep theirs across epochs).
    """

    name = "pyav"

    def __init__(self, threads: int = 0, cache_size: int = 4096) -> None:
        self.threads, self.cache_size = threads, cache_size
        self._cache: OrderedDict[tuple[str, int, int], _Index] = OrderedDict()
        self._lock = threading.Lock()  # `pvnas data` probes files from several threads

    def __getstate__(self) -> dict:
        return {"threads": self.threads, "cache_size": self.cache_size}  # workers start with a cold cache

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def info(self, path: str | os.PathLike) -> VideoInfo:
        return self._index(os.fspath(path)).info

    def read(self, path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
        path = os.fspath(path)
        index = self._index(path)
        want = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = index.info.num_frames
        if want.size == 0:
            raise ValueError("read() needs at least one frame index")
        if want.min() < 0 or want.max() >= n:
            raise ValueError(f"{path}: frame indices must be in [0, {n}), got {want.min()}..{want.max()}")
        needed = np.unique(want)
        try:
            frames = self._decode(path, index, needed)
        except av.FFmpegError as e:
            raise DecodeError(path, f"decoding failed: {e}") from None
        missing = [int(i) for i in needed if int(i) not in frames]
        if missing:
            raise DecodeError(path, f"frames {missing[:5]} of {n} could not be decoded (truncated or corrupt file?)")
        stacked = np.stack([frames[int(i)] for i in want])
        return torch.from_numpy(rotate_frames(stacked, index.info.rotation))

    def scan(self, path: str | os.PathLike) -> VideoScan:
        """Decode every frame from the start, going on past errors, counting what comes out.

        Not a read path (a read gives up at the first error): it tells how far a damaged file falls
        short of its header and index, for ``pvnas data --deep``. Raises :class:`DecodeError` as
        ``info`` does.
        """
        path = os.fspath(path)
        index = self._index(path)
        decoded = corrupt = errors = 0
        first_error: str | None = None
        try:
            container, stream = self._open(path)
        except av.FFmpegError as e:
            raise DecodeError(path, f"not a readable video: {e}") from None
        with container:
            header = int(stream.frames or 0)
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = container.duration / av.time_base if container.duration else 0.0
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as e:  # the demuxer gives up: the rest of the file is lost
                    errors, first_error = errors + 1, first_error or str(e)
                    break
                try:
                    for frame in packet.decode():
                        decoded += 1
                        corrupt += bool(frame.is_corrupt)
                except av.FFmpegError as e:  # one bad packet: decoding goes on with the next
                    errors, first_error = errors + 1, first_error or str(e)
        return VideoScan(header, seconds, index.info.num_frames, decoded, corrupt, errors, first_error)

    # -- index ---------------------------------------------------------------------------------

    def _index(self, path: str) -> _Index:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DecodeError(path, "file not found") from None
        except OSError as e:
            raise DecodeError(path, f"cannot access file: {e.strerror}") from None
        if st.st_size == 0:
            raise DecodeError(path, "empty file (0 bytes)")
        key = (path, st.st_size, st.st_mtime_ns)
        with self._lock:
            index = self._cache.get(key)
            if index is not None:
                self._cache.move_to_end(key)
                return index
        try:
            index = _build_index(path)
        except av.FFmpegError as e:
            raise DecodeError(path, f"not a readable video: {e}") from None
        except OSError as e:  # reading the mp4 header ourselves
            raise DecodeError(path, f"cannot read file: {e.strerror or e}") from None
        with self._lock:
            self._cache[key] = index
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return index

    # -- decoding ------------------------------------------------------------------------------

    def _open(self, path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        container = open_input(path)
        stream = container.streams.video[0]
        stream.codec_context.options = CODEC_OPTIONS
        stream.thread_type = "AUTO"
        stream.thread_count = self.threads or (1 if get_worker_info() is not None else 0)
        return container, stream

    def _decode(self, path: str, index: _Index, needed: np.ndarray) -> dict[int, np.ndarray]:
        """Decode the ``needed`` (sorted, unique) display indices into RGB arrays."""
        frames = _Frames(needed, index.coded)
        container, stream = self._open(path)
        with container:
            for key, segment in _plan(needed, index.keys):
                # A seek that lands after the wanted keyframe (an index that disagrees with the
                # packets) shows up as missing frames: retry from the keyframe before, then give up
                # on seeking and decode from the start, which is exact by definition.
                if not any(
                    self._segment(container, stream, index, k, segment, frames) for k in (key, key - 1) if k >= 0
                ):
                    self._sequential(path, segment, frames)
        return frames.arrays

    def _segment(self, container, stream, index: _Index, k: int, segment: np.ndarray, frames: _Frames) -> bool:
        """Seek to keyframe number ``k``, decode forward to the segment's last frame; False if unsure."""
        try:
            container.seek(int(index.key_ts[k]), stream=stream, backward=True)
        except av.FFmpegError as e:
            logger.debug("%s: seek failed (%s)", container.name, e)
            return False
        start, last = int(index.keys[k]), int(segment[-1])
        if index.mode == "pts":
            for frame in container.decode(stream):
                i = _lookup(index.pts, frame.pts)
                if i is None:
                    return False  # a timestamp the demux pass never saw: do not trust the mapping
                if i >= start:  # frames before the keyframe (open-GOP leading frames) may be broken
                    frames.keep(i, frame)
                    if i >= last:
                        break
        else:
            i = -1
            for packet in container.demux(stream):
                if i < 0:  # locate the landing packet by its dts; display index == decode position
                    landed = _lookup(index.dts, packet.dts)
                    if landed is None or landed > start:
                        return False
                    i = landed
                for frame in packet.decode():
                    frames.keep(i, frame)
                    i += 1
                if i > last:
                    break
        return all(int(i) in frames.arrays for i in segment)

    def _sequential(self, path: str, segment: np.ndarray, frames: _Frames) -> None:
        """Decode from the start counting output frames: exact for any container, and slow."""
        container, stream = self._open(path)
        with container:
            for i, frame in enumerate(container.decode(stream)):
                frames.keep(i, frame)
                if i >= segment[-1]:
                    break


class _Frames:
    """The RGB arrays of the wanted frames of one read, converted as they are decoded.

    Only wanted frames are converted (conversion costs about as much as decoding), through one
    shared reformatter: a fresh swscale context per frame costs 5-10x the conversion itself.
    """

    def __init__(self, wanted: np.ndarray, coded: tuple[int, int]) -> None:
        self.wanted, self.coded = wanted, coded
        self.arrays: dict[int, np.ndarray] = {}
        self._reformatter = VideoReformatter()

    def keep(self, i: int, frame: av.VideoFrame) -> None:
        if i not in self.arrays and _lookup(self.wanted, i) is not None:
            w, h = self.coded
            self.arrays[i] = self._reformatter.reformat(frame, format="rgb24", width=w, height=h).to_ndarray()


def _lookup(sorted_values: np.ndarray, value: int | None) -> int | None:
    """Position of ``value`` in a sorted array, or None when absent."""
    if value is None:
        return None
    pos = int(np.searchsorted(sorted_values, value))
    return pos if pos < len(sorted_values) and sorted_values[pos] == value else None


def _plan(needed: np.ndarray, keys: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Group sorted frame indices into (keyframe number, indices) decode segments.

    A frame joins the current segment when its keyframe is not after the segment's last frame
    (decoding on is cheaper than seeking back); otherwise a new segment seeks to its keyframe.
    Without seekable keyframes everything is one segment decoded from the start.
    """
    if len(keys) == 0:
        return [(-1, needed)]
    segments: list[tuple[int, list[int]]] = []
    for i in needed.tolist():
        k = max(int(np.searchsorted(keys, i, side="right")) - 1, 0)
        if segments and keys[k] <= segments[-1][1][-1]:
            segments[-1][1].append(i)
        else:
            segments.append((k, [i]))
    return [(k, np.asarray(seg)) for k, seg in segments]



def _build_index(path: str) -> _Index:
    """Demux every packet of the first video stream (decoding only the first frame)."""
    check_declared_samples(path)
    with open_input(path) as container:
        if not container.streams.video:
            raise DecodeError(path, "no video stream (audio-only or not a video)")
        stream = container.streams.video[0]
        codec = stream.codec_context
        if codec is None:
            raise DecodeError(path, "no decoder for its video codec (unknown or damaged codec tag)")
        if codec.width and codec.height:  # the size the codec will allocate
            check_size(path, codec.width, codec.height)
        codec.options = CODEC_OPTIONS
        first: av.VideoFrame | None = None
        pts, dts, key_pts, key_dts = [], [], [], []
        pts_ok = container.format.name not in _COUNT_MODE_FORMATS
        for count, packet in enumerate(container.demux(stream)):
            if count >= MAX_PACKETS:
                raise DecodeError(path, f"more than {MAX_PACKETS} packets: a damaged index, or too long to train on")
            if first is None:
                first = next(iter(packet.decode()), None)
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.pts is None:
                pts_ok = False
            pts.append(packet.pts)
            dts.append(packet.dts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
                key_dts.append((len(dts) - 1, packet.dts))
        if first is None or not pts:
            raise DecodeError(path, "no decodable video frames")
        reorders = bool(codec.has_b_frames)
        tb = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        container_duration = container.duration / av.time_base if container.duration else None

    n = len(pts)
    coded = (first.width, first.height)
    check_size(path, *coded)
    rotation = int(first.rotation or 0)
    if rotation % 90:
        logger.warning("%s: rotation %d is not a multiple of 90 degrees; ignored", path, rotation)
        rotation = 0
    if pts_ok and len(set(pts)) == n:
        mode = "pts"
        sorted_pts = np.sort(np.asarray(pts, dtype=np.int64))
        keys = np.searchsorted(sorted_pts, np.asarray(key_pts, dtype=np.int64))
        key_ts = np.asarray(key_pts, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        keys, key_ts = keys[order], key_ts[order]
        dts_arr = np.empty(0, dtype=np.int64)
        span = float((sorted_pts[-1] - sorted_pts[0]) * tb) if tb else 0.0
    else:
        mode = "count"
        sorted_pts = np.empty(0, dtype=np.int64)
        dts_ok = all(d is not None for d in dts) and all(a < b for a, b in zip(dts, dts[1:]))
        seekable = dts_ok and not reorders  # without reordering, decode position == display index
        keys = np.asarray([p for p, _ in key_dts] if seekable else [], dtype=np.int64)
        key_ts = np.asarray([d for _, d in key_dts] if seekable else [], dtype=np.int64)
        dts_arr = np.asarray(dts if dts_ok else [], dtype=np.int64)
        span = 0.0
    fps = float(rate) if rate else (n / container_duration if container_duration else 0.0)
    if fps <= 0:
        fps = n / span if span > 0 else 30.0
    duration = span + 1.0 / fps if span > 0 else (container_duration or n / fps)
    width, height = coded if rotation % 180 == 0 else coded[::-1]
    info = VideoInfo(num_frames=n, fps=fps, width=width, height=height, rotation=rotation, duration=duration)
    return _Index(info=info, mode=mode, pts=sorted_pts, keys=keys, key_ts=key_ts, dts=dts_arr, coded=coded)
