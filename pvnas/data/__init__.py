"""Dataset specs (docs/design.md §5) -> map-style datasets, and the loader that batches them."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl

from pvnas.config import ClipConfig
from pvnas.data.datasets import KINDS
from pvnas.data.decode import CachedDecoder, Decoder, get_decoder
from pvnas.data.loader import ClipDataset
from pvnas.errors import ConfigError

SPLITS = ("train", "val")
SPEC_HELP = ", ".join(kind.spec for kind in KINDS.values())
_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"kind:ARG?key=value&..."`` -> ``(kind, ARG, options)``, checking kind and option names."""
    head, _, query = spec.partition("?")
    kind, _, arg = head.partition(":")
    if kind not in KINDS:
        raise ConfigError(f"unknown dataset spec {spec!r}; expected one of: {SPEC_HELP}")
    try:
        options = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    except ValueError:
        raise ConfigError(f"--data {spec}: options after '?' must look like key=value&key=value") from None
    unknown = set(options) - KINDS[kind].options
    if unknown:
        allowed = ", ".join(sorted(KINDS[kind].options)) or "none"
        raise ConfigError(f"--data {spec}: unknown option(s) {', '.join(sorted(unknown))}; {kind} accepts: {allowed}")
    if KINDS[kind].needs_path and not arg:
        raise ConfigError(f"--data {spec}: {kind} needs a path, e.g. {kind}:/data/{kind}")
    if "flip" in options and options["flip"].lower() not in _BOOL:
        raise ConfigError(f"--data {spec}: flip must be 0 or 1, got {options['flip']!r}")
    if options.get("missing", "error") not in ("error", "skip"):
        raise ConfigError(f"--data {spec}: missing must be error or skip, got {options['missing']!r}")
    if options.get("split", "1") not in ("1", "2", "3"):
        raise ConfigError(f"--data {spec}: split must be 1, 2 or 3, got {options['split']!r}")
    return kind, arg, options


class SplitListing(NamedTuple):
    """One split of a file spec as listed (no decoding): ``(path, label)`` pairs, class names, the manifest or folder
    read (with the split), the flip default (None: the clip config decides) and the layout found, in words."""

    samples: list[tuple[str, int]]
    classes: list[str]
    source: str
    flip: bool | None
    layout: str


def list_samples(kind: str, arg: str, options: dict[str, str], split: str) -> SplitListing:
    """One split of a file spec, from manifests and directory listings only; :func:`parse_spec` gives the
    arguments."""
    lister = KINDS[kind].lister if kind in KINDS else None
    if lister is None:
        raise ConfigError(f"{kind} is not a file dataset; expected one of: {SPEC_HELP}")
    listing = lister(arg, split, options)
    flip = KINDS[kind].flip
    if "flip" in options:
        flip = _BOOL[options["flip"].lower()]
    return SplitListing(listing.samples, listing.classes, f"{listing.source} ({split} split)", flip, listing.layout)


def build_dataset(
    spec: str,
    split: str,
    clip: ClipConfig,
    *,
    seed: int = 0,
    views: str | None = None,
    decoder: Decoder | None = None,
    cache_bytes: int = 0,
) -> ClipDataset:
    """Parse a ``--data`` spec and build the ``split`` ("train" or "val") dataset.

    Every dataset has ``classes`` (list of names, index = label) and yields
    ``(clip, label, index)`` or a :class:`pvnas.data.loader.Skipped` (a video that cannot be read).
    ``views`` picks what ``clip`` is (default ``"train"`` for the train split, else ``"single"``):

    * ``"train"``  — one random clip: a ``window_seconds`` window, ``frames`` frames evenly in it,
      random short-side scale in ``clip.scale``, random ``clip.crop`` crop, horizontal flip:
      float ``(3, T, crop, crop)``;
    * ``"single"`` — centre clip, short side ``scale[0]``, centre crop: ``(3, T, crop, crop)``,
      for cheap validation during training;
    * ``"multi"``  — ``test_clips`` x ``test_crops`` views (10 x 3 = 30 by default) for final
      evaluation: ``(V, 3, T, crop, crop)``, clip-major; average the V scores per video.

    Spec options after ``?``: ``split=1|2|3`` (ucf101, hmdb51), ``flip=0|1`` (override the default:
    on, except ssv2 and demo whose labels say left/right), ``decoder=pyav|decord``,
    ``missing=error|skip`` (listed videos that do not exist: fail before training, the default,
    or leave them out with a warning — real Kinetics copies always lack a few), ``val`` and ``seed``
    (folder, list: the validation split drawn from data without one), ``root`` (list: where paths start).
    The ``seed`` argument only changes the content of ``synthetic``; clip randomness comes from the sampler.
    ``cache_bytes`` > 0 keeps up to that many bytes of whole decoded videos in memory (:class:`CachedDecoder`).
    File datasets raise :class:`~pvnas.errors.DataError` when a manifest is missing, names an
    unknown label or a file that does not exist, or when no listed video is readable.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    from pvnas.data.datasets.video import VIEWS, VideoDataset

    kind, arg, options = parse_spec(spec)
    views = views or ("train" if split == "train" else "single")
    if views not in VIEWS:
        raise ConfigError(f"views must be one of {VIEWS}, got {views!r}")
    build = KINDS[kind].build
    if build is not None:
        return build(arg, split, clip, seed, views)
    samples, classes, source, flip, _ = list_samples(kind, arg, options, split)
    if decoder is None:
        decoder = get_decoder(options.get("decoder", "pyav"))
    if cache_bytes > 0:
        decoder = CachedDecoder(decoder, cache_bytes)
    return VideoDataset(
        samples, classes, clip, views=views, decoder=decoder, flip=flip, source=source,
        allow_missing=options.get("missing") == "skip",
    )
