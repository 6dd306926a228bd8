"""``python -m workers`` runs the worker CLI."""

import sys

from workers.cli import main

sys.exit(main())
