"""Who may do what, and proof of what was done: the installation's signing key, roles and local
accounts (the tamper-evident audit chain itself is ``audit_chain.py``, under the store)."""
