"""Simulated phase-contrast phototoxicity experiments with ground truth (issue 4).

The embedded default data of the toolkit: experiments laid out as in the paper (section 2.1)
and written in the raw-experiment format of :mod:`data_prep.core.manifest`. The model is split
as the physics is:

- :mod:`~data_prep.sim.params`: every parameter, with its default and source, and the presets;
- :mod:`~data_prep.sim.biology`: the agent model (cells, migration, division, photodamage);
- :mod:`~data_prep.sim.render`: cells to an optical-path-difference map and a label image;
- :mod:`~data_prep.sim.optics`: Zernike phase contrast (phase-ring pupil, FFT) and the camera;
- :mod:`~data_prep.sim.truth`: ground truth (labels, sick masks, per-cell table);
- :mod:`~data_prep.sim.annotators`: simulated expert votes for Data Set B;
- :mod:`~data_prep.sim.plate`: the whole experiment, streamed to disk;
- :mod:`~data_prep.sim.compare`: statistics against real frames (docs/simulator.md).

docs/simulator.md describes the model and its comparison with real frames.
"""
