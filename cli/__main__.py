"""``python -m cli VERB ...``: the same as ``python run_pipeline.py VERB ...``."""

import sys

from cli.main import main

sys.exit(main())
