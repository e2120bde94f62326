"""``python -m prolific_ingest.cli``: the same as the ``prolific-ingest`` console script."""

import sys

from . import main

sys.exit(main())
