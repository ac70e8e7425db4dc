"""gaitscope engine: typed messages, configuration, registry, sources, runner and sinks.

The engine knows nothing about models; stages (``stages/``) know nothing about queues and threads.
"""
