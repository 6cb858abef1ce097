"""Whether the embedded demo model is already built in the model cache (read only; building it is
:func:`hdsu_core.demo_model.build_demo_model`)."""

from __future__ import annotations

import json

from hdsu_core import paths
from hdsu_core.training import DEMO_RECIPE


def demo_model_status() -> dict:
    """{"built", "path", "meta", "recipe"}: the newest cached build of the current demo recipe
    version, with its stored training stats."""
    root = paths.home() / "models"
    best = None
    if root.is_dir():
        for d in sorted(root.glob("demo-*")):
            meta = _read_meta(d)
            if meta is not None and meta.get("recipe", {}).get("version") == DEMO_RECIPE.get("version"):
                best = (d, meta)
    if best is None:
        return {"built": False, "path": None, "meta": {}, "recipe": dict(DEMO_RECIPE)}
    return {"built": True, "path": str(best[0]), "meta": best[1], "recipe": dict(DEMO_RECIPE)}


def _read_meta(model_dir) -> dict | None:
    """A cached model's hdsu_meta.json, or None when missing or unreadable."""
    mp = model_dir / "hdsu_meta.json"
    if not mp.is_file():
        return None
    try:
        return json.loads(mp.read_text())
    except (OSError, ValueError):
        return None
