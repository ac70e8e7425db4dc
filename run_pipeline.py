#!/usr/bin/env python
"""gaitscope command line: ``python run_pipeline.py {run,demo,enroll,gallery,search,query,synth,train,eval,bench} ...``."""

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main())
