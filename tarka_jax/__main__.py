"""``python -m tarka_jax`` runs the ``tarka-jax`` command line."""

import sys

from tarka_jax.cli import main

sys.exit(main())
