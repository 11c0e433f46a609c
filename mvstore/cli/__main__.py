"""``python -m mvstore.cli``: the ``mvstore`` command."""

import sys

from . import main

sys.exit(main())
