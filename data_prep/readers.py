"""Read the frames of one stage position, whatever TIFF layout the microscope wrote.

Supported (paper section 2.1 data come as 1344 x 1024 px 12/16-bit grey time-lapses):

- one multi-page TIFF, 8 or 16 bit unsigned (or 32-bit float), uncompressed or compressed
  (LZW, Deflate, Zstd, ... decoded by imagecodecs);
- ImageJ hyperstacks and OME-TIFF with a channel axis: the manifest's ``channel`` column
  chooses the channel (required when there is more than one);
- a folder of single-frame TIFFs, taken in name order.

:func:`check_stack` validates a position before any work starts (format, size, frame
count, byte ranges inside the file, and the frames that will be used decode without error,
hold no NaN and are not constant); :class:`Stack` then reads single frames as (H, W) float32.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tifffile

from data_prep.checks import check_frames, check_tiff_header
from data_prep.experiment import Position
from deadnet_caffe.errors import UserError
from deadnet_caffe.paper import CROP_PX

_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)
_FRAME_AXES = set("TIQZ")


def _tiff_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))


class Stack:
    """The frames of one position: ``n_frames`` images of (``height``, ``width``).

    Parameters
    ----------
    path : Path
        A TIFF file or a folder of single-frame TIFFs.
    channel : int or None
        Channel to read from multi-channel stacks.
    """

    def __init__(self, path: Path, channel: int | None = None) -> None:
        self.path = Path(path)
        self.channel = channel
        if self.path.is_dir():
            self._files = _tiff_files(self.path)
            if not self._files:
                raise UserError(f"{self.path}: the folder holds no .tif files.")
            self._pages = None
            self.n_frames = len(self._files)
            shape, dtype = self._describe(self._files[0], single=True)
        else:
            self._files = None
            shape, dtype = self._describe(self.path, single=False)
        self.height, self.width = shape
        self.dtype = dtype

    def _describe(self, path: Path, single: bool) -> tuple[tuple[int, int], np.dtype]:
        check_tiff_header(path)
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape, dtype = series.axes, series.shape, series.dtype
                pages = len(series.pages) if hasattr(series, "pages") else None
        except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as err:
            raise UserError(f"{path}: not a readable TIFF file ({err}).") from None
        dims = dict(zip(axes, shape, strict=True))
        if dims.get("S", 1) > 1:
            raise UserError(
                f"{path}: the image has {dims['S']} colour samples per pixel (RGB); "
                "a grey phase-contrast image is expected."
            )
        if np.dtype(dtype) not in [np.dtype(d) for d in _DTYPES]:
            raise UserError(
                f"{path}: pixel type {dtype} is not supported (grey 8/16 bit or float)."
            )
        if "Y" not in dims or "X" not in dims:
            raise UserError(f"{path}: the TIFF has no Y and X axes (axes {axes}).")
        n_channels = dims.get("C", 1)
        if n_channels > 1 and self.channel is None:
            raise UserError(
                f"{path}: the stack has {n_channels} channels; set the manifest's channel column."
            )
        channel = self.channel or 0
        if channel >= n_channels:
            raise UserError(f"{path}: channel {channel} asked for, the stack has {n_channels}.")
        other = [a for a in axes if a not in "YXS"]
        unknown = [a for a in other if a not in _FRAME_AXES and a != "C"]
        if unknown:
            raise UserError(f"{path}: unexpected axes {''.join(unknown)} in {axes}.")
        if single:
            if any(dims[a] > 1 for a in other):
                raise UserError(f"{path}: expected a single-frame TIFF, found axes {axes} {shape}.")
        else:
            sizes = [dims[a] for a in other]
            self._axes = other
            self._sizes = sizes
            self._channel_index = channel
            n_frames = int(np.prod([s for a, s in zip(other, sizes, strict=True) if a != "C"]))
            self.n_frames = n_frames
            if pages is not None and pages != int(np.prod(sizes)):
                raise UserError(
                    f"{path}: the TIFF holds {pages} pages but its axes {axes} need "
                    f"{int(np.prod(sizes))}; the file is truncated or inconsistent."
                )
        return (dims["Y"], dims["X"]), np.dtype(dtype)

    def _page_index(self, t: int) -> int:
        frame_axes = [(a, s) for a, s in zip(self._axes, self._sizes, strict=True) if a != "C"]
        frame_idx = np.unravel_index(t, [s for _, s in frame_axes]) if frame_axes else ()
        it = iter(frame_idx)
        idx = [self._channel_index if a == "C" else int(next(it)) for a in self._axes]
        return int(np.ravel_multi_index(idx, self._sizes)) if idx else 0

    def read(self, t: int) -> np.ndarray:
        """Frame ``t`` as (height, width) float32. Raises UserError if it cannot be decoded."""
        if not 0 <= t < self.n_frames:
            raise UserError(f"{self.path}: frame {t} asked for, the stack has {self.n_frames}.")
        path = self._files[t] if self._files is not None else self.path
        try:
            if self._files is not None:
                frame = tifffile.imread(path)
            else:
                frame = tifffile.imread(path, key=self._page_index(t), series=0)
        except Exception as err:  # any decoder error (imagecodecs raises its own types)
            raise UserError(f"{path}: frame {t} cannot be decoded ({err}).") from None
        frame = np.squeeze(np.asarray(frame))
        if frame.shape != (self.height, self.width):
            raise UserError(
                f"{path}: frame {t} is {frame.shape}, expected {(self.height, self.width)}."
            )
        return frame.astype(np.float32)

    def check_files(self) -> None:
        """Every file's TIFF structure (:func:`data_prep.checks.check_tiff_header`: data inside
        the file, frame count as its header says, a decoded size that fits in memory); the
        first file was checked when the stack was opened."""
        for path in (self._files or [])[1:]:
            check_tiff_header(path)


def check_stack(position: Position, frames: Iterable[int], min_side: int = CROP_PX) -> Stack:
    """Open and check one position's image data before any work starts.

    Checks the format (grey, supported type, channel), the size (at least one 256 px crop),
    the frame count against the manifest, that the data lie inside the file, and that each
    frame in ``frames`` decodes, holds no NaN or infinity and is not constant
    (:func:`data_prep.checks.check_frames`).

    Raises
    ------
    UserError
        One sentence naming the file and the problem.
    """
    stack = Stack(position.path, position.channel)
    if stack.height < min_side or stack.width < min_side:
        raise UserError(
            f"{position.path}: the image is {stack.width} x {stack.height} px, smaller than "
            f"one {min_side} px crop."
        )
    if stack.n_frames != position.n_frames:
        raise UserError(
            f"{position.path}: holds {stack.n_frames} frames but the manifest says "
            f"{position.n_frames}."
        )
    stack.check_files()
    for t in frames:
        check_frames(position.path, stack.read(t)[None], t)
    return stack
