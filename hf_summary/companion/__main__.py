"""`python -m hf_summary.companion`: the companion process (started by the training process's first writer)."""

import sys

from .main import main

sys.exit(main())
