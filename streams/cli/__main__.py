"""``python -m streams.cli``: the same as ``bge``."""

import sys

from streams.cli.main import main

sys.exit(main())
