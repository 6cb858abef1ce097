"""The embedded demo model: a tiny Llama trained from scratch on the members of the demo
knowledge base (holdout items are never trained on), cached under ``var/models``."""

from __future__ import annotations

import shutil

from hdsu_core import datasets, paths
from hdsu_core.datasets import QAItem
from hdsu_core.models import ModelBundle
from hdsu_core.progress import ProgressFn, no_progress
from hdsu_core.tagging import member_items
from hdsu_core.training import DEMO_RECIPE, inject_knowledge


def demo_items() -> list[QAItem]:
    return datasets.load("demo", paths.DEMO_KB).items


def build_demo_model(*, progress: ProgressFn = no_progress, force: bool = False) -> ModelBundle:
    """The embedded demo model: a tiny Llama trained from scratch on the members of the demo KB
    (holdout items are never trained on), cached under ``var/models``."""
    items = demo_items()
    members = member_items(items, DEMO_RECIPE["seed"], DEMO_RECIPE["holdout_fraction"])
    if force:
        for p in paths.model_cache().glob("demo-*"):
            shutil.rmtree(p, ignore_errors=True)
    return inject_knowledge(members, name="demo", recipe=DEMO_RECIPE, progress=progress)
