"""``python -m adaptive_hf.cli``."""

import sys

from .main import main

sys.exit(main())
