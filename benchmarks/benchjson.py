"""How every benchmark hands back its result: JSON on stdout, and in ``--json FILE`` when given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(doc: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """Print ``doc`` as indented JSON, also write it to ``path`` (if any); return it."""
    text = json.dumps(doc, indent=2)
    print(text)
    if path:
        Path(path).write_text(text)
    return doc
