"""Subcommands of ``deadnet``: one module each, discovered by :mod:`deadnet_caffe.cli`.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. The module docstring is the subcommand's ``--help`` description.
"""
