"""Command-line verbs: ``python run_pipeline.py VERB ...`` (or the ``gaitscope`` script, or ``python -m cli``)."""
