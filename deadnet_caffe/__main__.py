"""``python -m deadnet_caffe ARGS``: the ``deadnet`` command line, for environments whose
scripts folder is not on PATH (a notebook's kernel, a cluster job)."""

import sys

from deadnet_caffe.cli import main

sys.exit(main())
