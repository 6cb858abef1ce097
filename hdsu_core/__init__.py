"""HDSU Studio engine: hierarchy, datasets, models, unlearning methods, probes, store, audit.

Never imports streamlit: usable from the CLI, notebooks and the worker process.
"""

__version__ = "0.1.0"
