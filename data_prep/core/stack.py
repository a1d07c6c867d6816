"""The one image-stack reader: every image the toolkit reads goes through :class:`Stack`.

The dataset builder, the annotation app, inference (classify, heat maps, Grad-CAM, class
models, the report) and the simulator's tests read frames here, so one file is read the same
way everywhere. Supported (paper section 2.1 data come as 1344 x 1024 px 12/16-bit grey
time-lapses):

- one multi-page TIFF, 8 or 16 bit (or 32/64-bit float), uncompressed or compressed (LZW,
  Deflate, Zstd, ... decoded by imagecodecs), including ImageJ hyperstacks and OME-TIFF;
- a single PNG, JPEG or BMP image (one frame);
- a folder of single-frame images (TIFF, PNG, JPEG, BMP), taken in name order.

One policy for every caller:

Colour
    refused. A phase-contrast image is grey; an RGB file (TIFF samples, or a 3/4-channel
    PNG/JPEG) is most likely a rendered figure, and averaging it would feed the net a
    different intensity scale than it was trained on.
Channels
    a stack with a channel axis (``C``) of more than one channel needs ``channel``: the
    manifest's ``channel`` column for experiments, ``--channel`` for loose inputs.
Axes
    the file's own axes (ImageJ or OME metadata) unless ``axes`` overrides them, one letter
    per dimension of the TIFF's first series (``--axes TYX``). tifffile's ImageJ writer
    labels a plain 3-D array ``CYX`` (5 frames become "5 channels"); ``--axes TYX`` reads it
    as 5 frames. Every axis other than C, Y and X (T, Z, I, Q) counts as frames, in file
    order.
Size
    each side at least ``min_side`` px: the caller's need (a 256 px training crop for the
    dataset, the net's 220 px input for inference).
Pixels
    finite and no frame constant (:func:`data_prep.core.checks.check_frames`).

Frames come back in the file's own dtype (uint8, uint16, int16 or float).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from data_prep.core.checks import (
    check_frames,
    check_image_file_end,
    check_tiff_header,
    quiet_stderr,
)
from data_prep.core.errors import UserError
from data_prep.core.manifest import Position
from data_prep.core.paper import CROP_PX, NET_INPUT_PX

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp")
_DTYPES = tuple(np.dtype(d) for d in (np.uint8, np.uint16, np.int16, np.float32, np.float64))
_FRAME_AXES = "TZIQ"
_KNOWN_AXES = set(_FRAME_AXES) | set("CYXS")
#: how a stack's reader is told the channel, for messages
MANIFEST_CHANNEL = "the manifest's channel column"
OPTION_CHANNEL = "--channel"


def image_files(folder: Path | str) -> list[Path]:
    """Image files of a folder in name order; UserError if there are none."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def _decode_other(path: Path) -> np.ndarray:
    """A PNG, JPEG or BMP as (H, W) of its own dtype; colour is refused."""
    import cv2

    check_image_file_end(path)
    with quiet_stderr():
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise UserError(f"{path}: cannot read the image (OpenCV cannot decode it).")
    if arr.ndim == 3:
        raise UserError(
            f"{path}: the image has {arr.shape[2]} colour samples per pixel (RGB); "
            "a grey phase-contrast image is expected."
        )
    return arr


class Stack:
    """The frames of one image source: ``n_frames`` images of (``height``, ``width``).

    Opening reads headers only; :meth:`read` and :meth:`frames` decode pixels.

    Parameters
    ----------
    path : Path
        A TIFF, PNG, JPEG or BMP file, or a folder of single-frame images.
    channel : int or None
        Channel to read from a multi-channel stack.
    axes : str or None
        The TIFF's axes, one letter per dimension of its first series, replacing the file's
        own (for example ``"TYX"``); None keeps the file's.
    channel_source : str
        Where the user sets the channel (named in the message when one is missing).
    """

    def __init__(
        self,
        path: Path | str,
        channel: int | None = None,
        axes: str | None = None,
        channel_source: str = OPTION_CHANNEL,
    ) -> None:
        self.path = Path(path)
        self.channel = channel
        self.axes = axes
        self.channel_source = channel_source
        self._files: list[Path] | None = None
        self._axes: list[str] = []
        self._sizes: list[int] = []
        if self.path.is_dir():
            self._files = image_files(self.path)
            self.n_frames = len(self._files)
            shape, dtype = self._describe(self._files[0], single=True)
        elif self.path.is_file():
            shape, dtype = self._describe(self.path, single=False)
        else:
            raise UserError(f"{self.path}: no such file or folder.")
        self.height, self.width = shape
        self.dtype = dtype

    def _describe(self, path: Path, single: bool) -> tuple[tuple[int, int], np.dtype]:
        """Shape and dtype of one file; sets the frame layout when ``single`` is False."""
        if path.suffix.lower() not in TIFF_SUFFIXES:
            arr = _decode_other(path)
            if not single:
                self.n_frames = 1
            return arr.shape, arr.dtype
        import tifffile

        file_axes, shape = check_tiff_header(path)
        try:
            with tifffile.TiffFile(path) as tif:
                dtype = np.dtype(tif.series[0].dtype)
        except Exception as err:  # tifffile raises many types on corrupt structures
            raise UserError(f"{path}: not a readable TIFF file ({err}).") from None
        axes = self._axes_of(path, file_axes, shape)
        dims = dict(zip(axes, shape, strict=True))
        if dims.get("S", 1) > 1:
            raise UserError(
                f"{path}: the image has {dims['S']} colour samples per pixel (RGB); "
                "a grey phase-contrast image is expected."
            )
        if dtype not in _DTYPES:
            raise UserError(
                f"{path}: pixel type {dtype} is not supported (grey 8/16 bit or float)."
            )
        n_channels = dims.get("C", 1)
        if n_channels > 1 and self.channel is None:
            raise UserError(
                f"{path}: the stack has {n_channels} channels; say which with "
                f"{self.channel_source} (or --axes if that axis holds frames)."
            )
        channel = self.channel or 0
        if channel >= n_channels:
            raise UserError(f"{path}: channel {channel} asked for, the stack has {n_channels}.")
        other = [a for a in axes if a not in "YXS"]
        if single:
            if any(dims[a] > 1 for a in other):
                raise UserError(
                    f"{path}: expected a single-frame image, found axes {axes} {shape}."
                )
        else:
            self._axes = other
            self._sizes = [dims[a] for a in other]
            self.n_frames = int(np.prod([dims[a] for a in other if a != "C"]))
        return (dims["Y"], dims["X"]), dtype

    def _axes_of(self, path: Path, file_axes: str, shape: tuple[int, ...]) -> str:
        """The axes to read ``path`` with: the file's, or ``self.axes`` checked against it."""
        axes = file_axes if self.axes is None else self.axes.upper()
        where = f"--axes {self.axes}" if self.axes is not None else f"the TIFF's axes {axes}"
        if len(axes) != len(shape):
            raise UserError(
                f"{path}: {where} names {len(axes)} axes, the image has {len(shape)} "
                f"(shape {shape}, the file says {file_axes})."
            )
        unknown = sorted(set(axes) - _KNOWN_AXES)
        if unknown or len(set(axes)) != len(axes):
            raise UserError(
                f"{path}: {where} is not a set of distinct letters from "
                f"{''.join(sorted(_KNOWN_AXES))}."
            )
        if "Y" not in axes or "X" not in axes:
            raise UserError(f"{path}: {where} has no Y and X axes.")
        return axes

    def _page_index(self, t: int) -> int:
        """Index of the page (one Y x X plane) holding frame ``t`` of the chosen channel."""
        frame_axes = [(a, s) for a, s in zip(self._axes, self._sizes, strict=True) if a != "C"]
        frame_idx = np.unravel_index(t, [s for _, s in frame_axes]) if frame_axes else ()
        it = iter(frame_idx)
        idx = [(self.channel or 0) if a == "C" else int(next(it)) for a in self._axes]
        return int(np.ravel_multi_index(idx, self._sizes)) if idx else 0

    def frames(self, start: int = 0, count: int | None = None) -> np.ndarray:
        """Frames ``start .. start + count - 1`` (all from ``start`` when count is None).

        Returns
        -------
        (count, height, width) array of the file's dtype.

        Raises
        ------
        UserError
            A frame outside the stack, one that cannot be decoded, or one of another size.
        """
        count = self.n_frames - start if count is None else count
        stop = start + count
        if count < 1 or not 0 <= start < stop <= self.n_frames:
            raise UserError(
                f"{self.path}: frames {start}..{stop - 1} asked for, the stack has {self.n_frames}."
            )
        if self._files is not None:
            out = [self._read_file(self._files[t], t) for t in range(start, stop)]
        elif self.path.suffix.lower() not in TIFF_SUFFIXES:
            out = [_decode_other(self.path)]
        else:
            out = self._read_pages(range(start, stop))
        for t, frame in zip(range(start, stop), out, strict=True):
            if frame.shape != (self.height, self.width):
                raise UserError(
                    f"{self._files[t] if self._files else self.path}: frame {t} is "
                    f"{frame.shape}, expected {(self.height, self.width)}."
                )
        return np.stack(out)

    def read(self, t: int) -> np.ndarray:
        """Frame ``t`` as (height, width), the file's dtype."""
        return self.frames(t, 1)[0]

    def _read_file(self, path: Path, t: int) -> np.ndarray:
        """The one frame of a single-frame file in a folder."""
        if path.suffix.lower() not in TIFF_SUFFIXES:
            return _decode_other(path)
        import tifffile

        try:
            frame = tifffile.imread(path)
        except Exception as err:  # any decoder error (imagecodecs raises its own types)
            raise UserError(f"{path}: frame {t} cannot be decoded ({err}).") from None
        return np.squeeze(np.asarray(frame))

    def _read_pages(self, ts: Iterable[int]) -> list[np.ndarray]:
        """Frames ``ts`` of a TIFF, one page each, with the file opened once."""
        import tifffile

        out = []
        try:
            with tifffile.TiffFile(self.path) as tif:
                for t in ts:
                    out.append(np.squeeze(tif.asarray(key=self._page_index(t), series=0)))
        except UserError:
            raise
        except Exception as err:  # any decoder error (imagecodecs raises its own types)
            raise UserError(f"{self.path}: frame {t} cannot be decoded ({err}).") from None
        return out

    def check_size(self, min_side: int) -> None:
        """UserError when a side is shorter than ``min_side`` px."""
        if self.height < min_side or self.width < min_side:
            raise UserError(
                f"{self.path}: the image is {self.width} x {self.height} px, smaller than one "
                f"{min_side} px crop; at least {min_side} px are needed on each side."
            )

    def check(self, min_side: int, frames: Iterable[int] | None = None) -> None:
        """Check size, every file's structure, and the pixels of ``frames`` (None: all).

        Raises
        ------
        UserError
            A side shorter than ``min_side``, a folder file that is not one frame of the
            same size, or a frame with NaN/infinite pixels or constant.
        """
        self.check_size(min_side)
        for path in (self._files or [])[1:]:
            if self._describe(path, single=True)[0] != (self.height, self.width):
                raise UserError(f"{self.path}: images in the folder differ in size ({path.name}).")
        for t in range(self.n_frames) if frames is None else frames:
            check_frames(self.path, self.frames(t, 1), t)


def read_stack(
    path: Path | str,
    channel: int | None = None,
    axes: str | None = None,
    min_side: int = NET_INPUT_PX,
    channel_source: str = OPTION_CHANNEL,
) -> np.ndarray:
    """Read and check a whole image source (module docstring): the loose-input reader.

    Parameters
    ----------
    path : file or folder (see :class:`Stack`).
    channel : channel of a multi-channel stack (``--channel``).
    axes : the TIFF's axes, replacing the file's own (``--axes``).
    min_side : shortest side allowed, px (the net's 220 px input by default).
    channel_source : where the user sets the channel (:class:`Stack`).

    Returns
    -------
    (T, H, W) array of the file's own dtype.

    Raises
    ------
    UserError
        One sentence naming the file and the problem (see :meth:`Stack.check`).
    """
    stack = Stack(path, channel, axes, channel_source)
    stack.check(min_side, frames=[])
    frames = stack.frames()
    check_frames(stack.path, frames)
    return frames


def check_stack(position: Position, frames: Iterable[int], min_side: int = CROP_PX) -> Stack:
    """Open and check one manifest position's image data before any work starts.

    Checks the format (grey, supported type, channel), the size (at least one 256 px crop),
    the frame count against the manifest, that the data lie inside the file, and that each
    frame in ``frames`` decodes, holds no NaN or infinity and is not constant.

    Raises
    ------
    UserError
        One sentence naming the file and the problem.
    """
    stack = Stack(position.path, position.channel, channel_source=MANIFEST_CHANNEL)
    stack.check_size(min_side)
    if stack.n_frames != position.n_frames:
        raise UserError(
            f"{position.path}: holds {stack.n_frames} frames but the manifest says "
            f"{position.n_frames}."
        )
    stack.check(min_side, frames)
    return stack
