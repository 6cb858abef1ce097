"""HDSU: hierarchical dual-strategy unlearning (method of arXiv 2511.19498; equations and the
measurements behind the defaults in docs/method.md), as phases a reader can find:

- ``roles.py``     concept-aware token roles and their push / hold weights (the forget batch);
- ``mask.py``      the Fisher-scored update mask (``mask_fraction`` of all weights, per item);
- ``shared_mask.py`` the forget batch and the mask as ``prepare`` builds them, also without
                   running HDSU (``hdsu_mask``: the masked baselines);
- ``geometry.py``  projection of conflicting gradients, guards, bounded and damped steps, the
                   masked weights as one flat vector;
- ``push.py``      the push loop with item focus, until the harness stop rule fires;
- ``repair.py``    retain repair of retained items the push flipped;
- ``settle.py``    pulling over-forgotten items back to the non-member level;
- ``state.py``     the one state object the phases share;
- ``method.py``    the registered method: the phases in order;
- ``settings.py``  the settings and their defaults.
"""

from hdsu_core.methods.hdsu.method import HDSU

__all__ = ["HDSU"]
