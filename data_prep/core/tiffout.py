"""Calibrated ImageJ TIFFs: the one writer of every TIFF stack the toolkit writes.

Fiji and napari open these files calibrated. Each carries what the toolkit knows:

- the pixel size as the TIFF ``XResolution``/``YResolution`` (pixels per unit) with the unit
  in the ImageJ description (``unit=um``); ImageJ files have ``ResolutionUnit`` NONE;
- the frame interval in seconds as ImageJ ``finterval`` (time-lapses only);
- the axes: ``TYX`` for time-lapses, ``CYX`` for channels (the two Grad-CAM weightings of a
  whole frame are channels, not Z slices), ``TYXS`` for RGB overlays; channel names go in the
  ImageJ ``Labels``.

The calibration comes from the experiment's manifest (:meth:`Calibration.of_position`) or
from the input TIFF's own tags (:meth:`Calibration.of_tiff`). What is unknown is left out
rather than guessed: a file without a known pixel size has no resolution tags and no unit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

#: Spellings of micrometre in ImageJ descriptions and OME metadata, written as ``um``.
_MICRON = frozenset({"um", "micron", "microns", "µm", "μm", "\\u00B5m", "micrometer"})
#: ImageJ ``tunit`` spellings to seconds.
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "min": 60.0}
_TIME_UNITS |= {"h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0}
_RESUNIT_CM = 3  # TIFF ResolutionUnit CENTIMETER


@dataclass(frozen=True)
class Calibration:
    """Physical size of a pixel and time between frames.

    Parameters
    ----------
    pixel_size : size of one pixel in ``unit`` (square pixels), or None when unknown.
    unit : length unit of ``pixel_size`` (``um`` for micrometres).
    frame_interval_s : seconds between frames, or None when unknown.
    """

    pixel_size: float | None = None
    unit: str = "um"
    frame_interval_s: float | None = None

    @classmethod
    def of_position(cls, pos, every: int = 1) -> Calibration:
        """From a manifest row (:class:`data_prep.core.manifest.Position`), keeping every
        ``every``-th frame."""
        return cls(pos.pixel_size_um, "um", pos.frame_interval_min * 60.0 * every)

    @classmethod
    def of_tiff(cls, path: Path | str) -> Calibration:
        """What a TIFF (or the first TIFF of a folder) says about itself.

        Read in this order: the ImageJ description (``unit``, ``finterval``, ``tunit``) with
        the resolution tags; OME metadata (``PhysicalSizeX``, ``TimeIncrement``); plain
        resolution tags in centimetres. Resolution in inches is taken as no calibration
        (72 or 96 dpi are screen defaults, not a microscope's). Not a TIFF: nothing known.
        """
        import tifffile

        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
            if not files:
                return cls()
            path = files[0]
        if path.suffix.lower() not in (".tif", ".tiff"):
            return cls()
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            per_unit = _pixels_per_unit(page)
            if tif.is_imagej:
                md = tif.imagej_metadata or {}
                unit = _unit(md.get("unit"))
                dt = md.get("finterval")
                scale = _TIME_UNITS.get(str(md.get("tunit", "sec")).lower())
                dt_s = float(dt) * scale if dt and scale else None
                size = _size(per_unit) if per_unit and unit else None
                return cls(size, unit or "um", dt_s)
            if tif.is_ome:
                return _of_ome(tif.ome_metadata)
            tag = page.tags.get("ResolutionUnit")
            if per_unit and tag is not None and int(tag.value) == _RESUNIT_CM:
                return cls(_size(per_unit, 1e4), "um", None)
        return cls()

    def every(self, n: int) -> Calibration:
        """The calibration of every ``n``-th frame."""
        dt = None if self.frame_interval_s is None else self.frame_interval_s * n
        return replace(self, frame_interval_s=dt)

    def or_interval(self, frame_interval_s: float | None) -> Calibration:
        """This calibration, with ``frame_interval_s`` where it has none."""
        if self.frame_interval_s is not None:
            return self
        return replace(self, frame_interval_s=frame_interval_s)

    def imagej(self, axes: str, labels: list[str] | None = None, info: str | None = None):
        """``tifffile.imwrite`` keyword arguments for an ImageJ file of ``axes``."""
        md: dict = {"axes": axes}
        kw: dict = {"imagej": True, "metadata": md}
        if self.pixel_size:
            kw["resolution"] = (1.0 / self.pixel_size, 1.0 / self.pixel_size)
            md["unit"] = self.unit
        if "T" in axes and self.frame_interval_s:
            md["finterval"] = float(self.frame_interval_s)
        if labels:
            md["Labels"] = list(labels)
        if info:
            md["Info"] = info
        if axes.endswith("S"):
            kw["photometric"] = "rgb"
        else:
            kw["photometric"] = "minisblack"
        return kw


def _pixels_per_unit(page) -> float | None:
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    value = num / den if den else 0.0
    return value if value > 0 and value != 1.0 else None


def _size(per_unit: float, unit_length: float = 1.0) -> float:
    """Pixel size from pixels per unit, to 10 significant digits (TIFF stores a fraction,
    so 1 / (20 / 13) would read back as 0.6499999999999999 instead of 0.65)."""
    return float(f"{unit_length / per_unit:.10g}")


def _unit(text) -> str | None:
    if not text:
        return None
    text = str(text).strip()
    if text.lower() in _MICRON or text in _MICRON:
        return "um"
    if text.lower() in ("pixel", "pixels", "inch", ""):
        return None
    return text


def _of_ome(xml: str | None) -> Calibration:
    import tifffile

    if not xml:
        return Calibration()
    try:
        image = tifffile.xml2dict(xml)["OME"]["Image"]
    except (KeyError, ValueError, TypeError):
        return Calibration()
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
    size = pixels.get("PhysicalSizeX")
    unit = _unit(pixels.get("PhysicalSizeXUnit", "µm"))
    dt = pixels.get("TimeIncrement")
    scale = _TIME_UNITS.get(str(pixels.get("TimeIncrementUnit", "s")).lower())
    return Calibration(
        float(size) if size and unit else None,
        unit or "um",
        float(dt) * scale if dt and scale else None,
    )


def _check_axes(axes: str, shape: tuple[int, ...]) -> None:
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} do not match a {len(shape)}-d shape {shape}")


def write_stack(
    path: Path | str,
    data: np.ndarray | Iterable[np.ndarray],
    axes: str,
    cal: Calibration,
    *,
    shape: tuple[int, ...] | None = None,
    dtype=None,
    labels: list[str] | None = None,
    info: str | None = None,
    **kwargs,
) -> None:
    """Write ``data`` as one calibrated ImageJ TIFF.

    Parameters
    ----------
    data : array of ``shape`` matching ``axes`` (e.g. (T, H, W) for ``TYX``, (C, H, W) for
        ``CYX``, (T, H, W, 3) uint8 for ``TYXS``), or an iterator of its frames (then give
        ``shape`` and ``dtype``; frames are written as they come).
    cal : pixel size, unit and frame interval.
    labels : channel (or frame) names, ImageJ ``Labels``.
    kwargs : more ``tifffile.imwrite`` arguments (``compression``...).
    """
    import tifffile

    if isinstance(data, np.ndarray):
        shape = data.shape
    _check_axes(axes, tuple(shape))
    tifffile.imwrite(
        path, data, shape=shape, dtype=dtype, **cal.imagej(axes, labels, info), **kwargs
    )


class StackWriter:
    """Writes a calibrated ImageJ stack frame by frame from another thread.

    tifffile writes a series from an iterator; a thread per file lets one loop feed several
    files in step (an image and its labels, a heat map and its overlay). At most two frames
    wait in the queue, so memory does not grow with the length of the stack.
    """

    def __init__(self, path: Path | str, shape, dtype, axes: str, cal: Calibration, **kwargs):
        _check_axes(axes, tuple(shape))
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.ended = False

        def frames() -> Iterator[np.ndarray]:
            while (frame := self.queue.get()) is not None:
                yield frame
            self.ended = True

        def work() -> None:
            try:
                write_stack(path, frames(), axes, cal, shape=tuple(shape), dtype=dtype, **kwargs)
            except BaseException as err:  # reported by close()
                self.error = err
                while not self.ended and self.queue.get() is not None:  # unblock the producer
                    pass

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def put(self, frame: np.ndarray) -> None:
        """Queue the next frame (blocks while two frames wait)."""
        self.queue.put(frame)

    def close(self, check: bool = True) -> None:
        """Finish the file; with ``check``, raise what went wrong in the writer thread."""
        if not self.ended:
            self.queue.put(None)
        self.thread.join()
        if check and self.error is not None:
            raise self.error
