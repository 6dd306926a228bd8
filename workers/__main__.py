"""``python -m workers`` runs the worker CLI."""

import sys

from workers.command import main

sys.exit(main())
