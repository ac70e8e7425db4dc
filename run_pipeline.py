#!/usr/bin/env python
"""gaitscope command line: ``python run_pipeline.py {run,enroll,gallery,search,query,synth,train,eval,bench} ...``."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
