"""Loaded by every Python process the tests start (PYTHONPATH): the port guard."""

import importlib.util
import os
from pathlib import Path

if os.environ.get("PORTGUARD_DIR"):
    # By file, not by package: a child's sys.path need not hold the checkout.
    _path = Path(__file__).resolve().parent.parent / "portguard.py"
    _spec = importlib.util.spec_from_file_location("_taskhub_portguard", _path)
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_module)
        _module.install_from_environment()
