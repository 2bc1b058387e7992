"""``python -m poseanything.engine.cli``: how the add-on starts the engine as a child process."""

import sys

from . import main

sys.exit(main())
