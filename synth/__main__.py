"""``python -m synth``: see synth.cli."""

import sys

from synth.cli import main

if __name__ == "__main__":
    sys.exit(main())
