"""`python -m train.report RUN_DIR ...`: see train/report/__init__.py."""

import sys

from train.report.build import main

sys.exit(main())
