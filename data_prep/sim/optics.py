"""Zernike phase-contrast image formation and the camera (shared/reference/
phase-contrast-and-cells.md, "Phase-contrast image formation").

The specimen is a phase object, ``phi = 2 pi / lambda * OPD``. The image is::

    I = | IFFT( FFT(exp(i phi)) * P(k) ) |^2

The pupil ``P`` is zero beyond the cutoff ``NA / lambda``. The phase ring multiplies the light
that passes through it by ``a exp(-i pi/2)`` (positive phase contrast: objects of higher OPD
look dark). With annular illumination, the direct light of every illumination direction
passes the ring, and an object frequency ``k`` passes it too when the shifted ring still
overlaps itself. Averaging over the annulus gives the ring's normalised autocorrelation
``O(k)`` (1 at k = 0, falling to ~0 beyond the ring width), and::

    P(k) = circ(|k| < NA/lambda) * [1 - (1 - a exp(-i pi/2)) O(k)] * exp(i pi lambda z |k|^2)

The finite ring width is what makes the bright halo around dense objects and the shade-off
inside large flat ones; the last factor is the defocus ``z`` of a slowly drifting focus.
The phase map is padded by mirroring before the FFT, so that halos do not wrap around.
The intensity is divided by the background ``a^2`` and multiplied by a smooth uneven
illumination; the camera adds shot noise (Gaussian, the signal is thousands of electrons),
read noise, gain, offset and ``adc_bits`` quantisation, and stores the counts as uint16.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from data_prep.sim.biology import smooth_field
from data_prep.sim.params import Optics

_FOCUS_STEP_UM = 0.1  # well inside the 20x/0.75 depth of field (~1 um)
_PAD_PX = 32  # mirrored margin around the field for the FFT (the halo is a few um)


def ring_overlap(shape: tuple[int, int], pixel_size_um: float, o: Optics) -> np.ndarray:
    """``O(k)`` on the FFT grid, (H, W) float32: the share of the condenser annulus' image
    that still falls on the phase ring when shifted by ``k``.

    The annulus' image is ``annulus_fraction`` as wide as the ring and centred on it. At 1
    (the default) ``O`` is the ring's normalised autocorrelation, which falls from 1 at once;
    below 1 (real phase rings are made wider than the annulus' image), ``O`` stays 1 out to
    shifts of ``(1 - annulus_fraction) / 2`` of the ring's width, so that objects broader than
    about ``wavelength`` over that shift shade off completely.
    """
    ky = scipy.fft.fftfreq(shape[0], pixel_size_um)[:, None]
    kx = scipy.fft.fftfreq(shape[1], pixel_size_um)[None, :]
    k = np.sqrt(kx * kx + ky * ky)
    r0 = o.ring_radius_na / o.wavelength_um
    half = 0.5 * o.ring_width_na / o.wavelength_um
    ring = ((k >= r0 - half) & (k <= r0 + half)).astype(np.float64)
    spec = scipy.fft.fft2(ring)
    inner = o.annulus_fraction * half  # at 1, the same array as the ring
    annulus = ((k >= r0 - inner) & (k <= r0 + inner)).astype(np.float64)
    overlap = scipy.fft.ifft2(scipy.fft.fft2(annulus) * np.conj(spec)).real / annulus.sum()
    return np.clip(overlap, 0.0, 1.0).astype(np.float32)


class PhaseContrast:
    """Images OPD maps of one position through the phase-contrast microscope and camera.

    Parameters
    ----------
    o : Optics
    shape : (H, W)
    pixel_size_um : float
    rng : numpy Generator
        For the position's fixed illumination pattern and focus drift.
    n_steps : int
        Length of the time-lapse in 8-min steps (the focus drift is drawn for all of them).
    workers : int
        Threads for scipy.fft.
    """

    def __init__(
        self,
        o: Optics,
        shape: tuple[int, int],
        pixel_size_um: float,
        rng: np.random.Generator,
        n_steps: int,
        workers: int = 1,
    ):
        self.o, self.shape, self.workers = o, shape, workers
        # the field is padded by mirroring (like more cells beyond the border) so that the
        # periodic FFT does not wrap halos from one border onto the other
        fft_shape = tuple(scipy.fft.next_fast_len(n + 2 * _PAD_PX) for n in shape)
        self.pad = [
            ((f - n) // 2, f - n - (f - n) // 2) for f, n in zip(fft_shape, shape, strict=True)
        ]
        ky = scipy.fft.fftfreq(fft_shape[0], pixel_size_um)[:, None]
        kx = scipy.fft.fftfreq(fft_shape[1], pixel_size_um)[None, :]
        self.k2 = (kx * kx + ky * ky).astype(np.float32)
        ring = ring_overlap(fft_shape, pixel_size_um, o)
        a = o.ring_transmission * np.exp(-0.5j * np.pi)
        cutoff = self.k2 <= (o.na / o.wavelength_um) ** 2
        self.base_pupil = (cutoff * (1 - (1 - a) * ring)).astype(np.complex64)
        self.background = o.ring_transmission**2
        # uneven illumination: a smooth field plus a tilt, +-illumination_variation/2
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        tilt = rng.normal(0, 1, 2)
        field = smooth_field(rng, shape, 0.6 * max(shape)) + tilt[0] * (yy / shape[0] - 0.5)
        field += tilt[1] * (xx / shape[1] - 0.5)
        field = (field - field.min()) / max(float(np.ptp(field)), 1e-6) - 0.5
        self.illumination = (1 + o.illumination_variation * field).astype(np.float32)
        # slow focus drift: a smoothed random walk, standard deviation focus_drift_um
        walk = np.cumsum(rng.normal(0, 1, n_steps + 20))
        walk = np.convolve(walk, np.ones(20) / 20, mode="valid")[:n_steps]
        walk -= walk.mean()
        self.focus_um = (o.focus_drift_um * walk / max(float(walk.std()), 1e-6)).astype(float)
        self._pupils: dict[int, np.ndarray] = {}

    def pupil(self, step: int) -> np.ndarray:
        """(H, W) complex64 pupil at this step's focus (quantised to 0.1 um, cached)."""
        key = round(float(self.focus_um[min(step, len(self.focus_um) - 1)]) / _FOCUS_STEP_UM)
        if key not in self._pupils:
            if len(self._pupils) >= 3:  # the drift is slow: keep the most recent few
                self._pupils.pop(next(iter(self._pupils)))
            z = key * _FOCUS_STEP_UM
            phase = (np.pi * self.o.wavelength_um * z) * self.k2
            self._pupils[key] = self.base_pupil * (np.cos(phase) + 1j * np.sin(phase)).astype(
                np.complex64
            )
        return self._pupils[key]

    def intensity(self, opd: np.ndarray, step: int) -> np.ndarray:
        """Noise-free phase-contrast intensity relative to the background, (H, W) float32."""
        phi = (2 * np.pi / self.o.wavelength_um) * opd.astype(np.float32)
        phi = np.pad(phi, self.pad, mode="symmetric")
        field = np.empty(phi.shape, np.complex64)
        field.real = np.cos(phi)
        field.imag = np.sin(phi)
        spec = scipy.fft.fft2(field, workers=self.workers, overwrite_x=True)
        spec *= self.pupil(step)
        img = scipy.fft.ifft2(spec, workers=self.workers, overwrite_x=True)
        (t, _), (left, _) = self.pad
        img = img[t : t + self.shape[0], left : left + self.shape[1]]
        out = img.real * img.real + img.imag * img.imag
        return out / np.float32(self.background)

    def camera(self, intensity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Expose and read out: electrons, shot and read noise, ADC. Returns (H, W) uint16."""
        o = self.o
        e = intensity * self.illumination * np.float32(o.background_electrons)
        sigma = np.sqrt(np.maximum(e, 0) + np.float32(o.read_noise_electrons**2))  # shot + read
        e += sigma * rng.standard_normal(e.shape, dtype=np.float32)
        adu = e / np.float32(o.electrons_per_adu) + np.float32(o.offset_adu)
        return np.clip(np.rint(adu), 0, 2**o.adc_bits - 1).astype(np.uint16)
