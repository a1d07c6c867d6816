"""Checks of raw inputs before any work starts: text files and images.

Every command reads its raw inputs through these functions (directly, or through
:mod:`data_prep.core.manifest`, :mod:`data_prep.votes_csv` and the one image reader
:mod:`data_prep.core.stack`), so a bad file gets one sentence naming it
(:class:`~data_prep.core.errors.UserError`) instead of a traceback, a crash or a silently
wrong answer. The Caffe side (weights, prototxts, LMDBs, numeric options) is checked in
:mod:`deadnet_caffe.checks`.

Text files (manifests, votes, CSV indexes, prototxts, settings JSON)
    are UTF-8; a byte-order mark (as Excel writes it) is accepted and dropped. Anything else
    (Latin-1, UTF-16, a binary file) is refused with the first offending byte's offset.
TIFF headers
    are checked before any pixel is decoded: every page's data must lie inside the file (a
    truncated file, or a header that claims 200000 x 200000 px over a few bytes of data),
    the decoded stack must fit in memory (:data:`MAX_DECODED_FRACTION`), and the number of
    frames that the ImageJ metadata (``images=``) or the axes claim must be the number of
    pages that are there.
Pixels
    must be finite (float TIFFs can hold NaN or infinity) and no frame may be constant.
    A constant frame (blank, saturated, a failed acquisition) holds no image at all: the
    per-crop variance normalisation (paper section 2.3) turns it into an input of zeros,
    which the net then scores like any other input (a plausible-looking "95% sick").
    Warning and going on would still put that invented number into tables, heat maps and
    a report's dose-response fit, so such a frame is refused: the user drops it (or the
    position) and reruns.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from data_prep.core.errors import UserError

#: largest share of physical memory that a decoded image stack (as float32) may take
MAX_DECODED_FRACTION = 0.5


# --- Text -----------------------------------------------------------------------------------


def read_text(path: Path | str, what: str) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped).

    Parameters
    ----------
    path : the file.
    what : what the file is, for the message (``"manifest"``, ``"votes CSV"``, ...).

    Raises
    ------
    UserError
        The file cannot be read, holds NUL bytes (a binary file), or is not UTF-8.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} ({err.strerror}).") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: the {what} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
            f"{err.start}); save it as UTF-8."
        ) from None
    if "\x00" in text:
        raise UserError(f"{path}: the {what} is a binary file, not text.")
    return text


# --- TIFF headers ---------------------------------------------------------------------------


class _TiffWarnings(logging.Handler):
    """Collects (and silences) tifffile's logged warnings inside a ``with`` block.

    tifffile logs, rather than raises, when a page chain ends at an offset past the end of
    the file (a truncated file); the messages are collected here and kept off stderr.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> list[str]:
        log = logging.getLogger("tifffile")
        self._propagate, log.propagate = log.propagate, False
        log.addHandler(self)
        return self.messages

    def __exit__(self, *exc) -> None:
        log = logging.getLogger("tifffile")
        log.removeHandler(self)
        log.propagate = self._propagate


def memory_bytes() -> int:
    """Physical memory of this machine in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_decoded_size(path: Path | str, shape: tuple[int, ...], limit: int | None = None) -> None:
    """Refuse a stack whose decoded float32 copy would take more than ``limit`` bytes.

    ``shape`` is the stack's shape as its header claims it; ``limit`` defaults to
    :data:`MAX_DECODED_FRACTION` of :func:`memory_bytes`.
    """
    limit = int(MAX_DECODED_FRACTION * memory_bytes()) if limit is None else limit
    need = 4 * int(np.prod(shape, dtype=np.float64))
    if need > limit:
        raise UserError(
            f"{path}: the header claims {' x '.join(map(str, shape))} pixels "
            f"({need / 1e9:.1f} GB as float32), more than the {limit / 1e9:.1f} GB this "
            "machine can hold; the file is corrupt or far larger than a microscope image."
        )


def check_tiff_header(path: Path | str) -> tuple[str, tuple[int, ...]]:
    """Check a TIFF's structure before decoding it; return its first series' axes and shape.

    Checks that the file opens as a TIFF, that every page's data lies inside the file,
    that the decoded stack fits in memory (:func:`check_decoded_size`), and that the
    number of pages is the number of frames that the ImageJ metadata and the series' axes
    claim (a truncated multi-frame TIFF is not read as fewer frames).

    Raises
    ------
    UserError
        One sentence naming the file and the problem.
    """
    import tifffile

    path = Path(path)
    size = os.path.getsize(path)
    with _TiffWarnings() as warned:
        try:
            with tifffile.TiffFile(path) as tif:
                pages = list(tif.pages)
                series = tif.series[0]
                axes, shape = series.axes, tuple(int(s) for s in series.shape)
                itemsize = np.dtype(series.dtype).itemsize
                imagej_images = (tif.imagej_metadata or {}).get("images")
                n_series_pages = len(series.pages)
                contiguous = series.dataoffset
                ranges = [
                    (int(off), int(cnt))
                    for page in pages
                    for off, cnt in zip(page.dataoffsets, page.databytecounts, strict=False)
                ]
        except Exception as err:  # tifffile raises many types on corrupt structures
            raise UserError(f"{path}: not a readable TIFF file ({err}).") from None
    for off, cnt in ranges:
        if off + cnt > size:
            raise UserError(
                f"{path}: the file is truncated or corrupt (image data at bytes {off}-"
                f"{off + cnt} runs past its end at byte {size})."
            )
    check_decoded_size(path, shape)
    broken = [w for w in warned if "invalid page offset" in w or "corrupt" in w]
    if broken:
        why = re.sub(r"^<[^>]*> ", "", broken[0])
        raise UserError(f"{path}: the file is truncated or corrupt (tifffile: {why}).")
    planes = int(np.prod([s for a, s in zip(axes, shape, strict=True) if a not in "YXS"]))
    plane_bytes = int(np.prod(shape)) // planes * itemsize
    if imagej_images is not None and int(imagej_images) != len(pages):
        # ImageJ files > 4 GB have one IFD and the frames in one block after its data
        one_block = len(pages) == 1 and contiguous is not None
        if not one_block or int(contiguous) + int(imagej_images) * plane_bytes > size:
            raise UserError(
                f"{path}: the ImageJ header says {imagej_images} frames but the file holds "
                f"{len(pages)}; the file is truncated."
            )
    elif contiguous is not None:
        if int(contiguous) + planes * plane_bytes > size:
            raise UserError(
                f"{path}: the file is truncated (its {planes} frames need "
                f"{int(contiguous) + planes * plane_bytes} bytes, the file has {size})."
            )
    elif n_series_pages != planes:
        raise UserError(
            f"{path}: the TIFF holds {n_series_pages} pages but its axes {axes} {shape} need "
            f"{planes}; the file is truncated or inconsistent."
        )
    return axes, shape


# --- PNG, JPEG, BMP ----------------------------------------------------------------------------

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def check_image_file_end(path: Path | str) -> None:
    """Refuse a PNG, JPEG or BMP file that is cut short.

    OpenCV decodes a truncated JPEG without an error (the missing rows come out grey) and
    says so only on the C library's stderr, so the end of the file is checked here: a PNG
    must end with its IEND chunk, a JPEG with its EOI marker (FF D9, zero padding allowed),
    a BMP must be as long as its header says. Other files are left to the decoder.

    Raises
    ------
    UserError
        Naming the file.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 64))
        tail = fh.read()
    png = head.startswith(b"\x89PNG\r\n\x1a\n") and not tail.endswith(_PNG_END)
    jpeg = head.startswith(b"\xff\xd8") and not tail.rstrip(b"\x00").endswith(b"\xff\xd9")
    bmp = head.startswith(b"BM") and int.from_bytes(head[2:6], "little") > size
    if png or jpeg or bmp:
        raise UserError(
            f"{path}: the image file is truncated (it does not end as its format needs)."
        )


class quiet_stderr:
    """Send file descriptor 2 to /dev/null inside a ``with`` block (C libraries such as
    libpng print their own error lines there; the caller reports the error as a sentence)."""

    def __enter__(self) -> None:
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)


# --- Pixels ---------------------------------------------------------------------------------


def check_frames(path: Path | str, frames: np.ndarray, first: int = 0) -> None:
    """Refuse frames with NaN or infinite pixels, and constant frames (module docstring).

    Parameters
    ----------
    path : the file the frames come from (for the message).
    frames : (T, H, W) array of any number type.
    first : index of ``frames[0]`` in the file (for the message).

    Raises
    ------
    UserError
        Naming the file and the first bad frame.
    """
    for t, frame in enumerate(frames):
        if np.issubdtype(frame.dtype, np.floating) and not np.isfinite(frame).all():
            raise UserError(f"{path}: frame {first + t} contains NaN or infinite pixels.")
        lo, hi = frame.min(), frame.max()
        if lo == hi:
            raise UserError(
                f"{path}: frame {first + t} is constant (every pixel is {lo}), so it holds no "
                "image to classify; remove it or the file."
            )
