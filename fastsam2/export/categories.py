"""Category names for exported objects: a user map first, else the object's phrase.

The map (``--category-map FILE``, JSON or YAML) is looked up with the most
specific key first: ``"<video_id>/<obj_id>"``, then ``"<video_id>"``, then the
object's phrase (e.g. ``{"a red car": "car"}`` folds captions into classes).
Objects with neither get ``"object"``.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CATEGORY = "object"


def load_category_map(uri: str, storage_options: dict | None = None) -> dict[str, str]:
    """Read a ``{key: category}`` map from a JSON or YAML file (local or ``s3://``)."""
    import yaml

    from fastsam2.export.source import ExportError
    from fastsam2.storage import filesystem_for, strip_protocol

    fs = filesystem_for(uri, storage_options)
    try:
        with fs.open(strip_protocol(uri), "r") as fh:
            data = yaml.safe_load(fh.read())  # JSON is YAML
    except FileNotFoundError:
        raise ExportError(f"category map not found: {uri}") from None
    except yaml.YAMLError as exc:
        raise ExportError(f"category map {uri} is not JSON or YAML: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ExportError(f"category map {uri} must map names to category strings")
    return {str(k): v for k, v in data.items()}


class Categories:
    """Assigns category ids (1, 2, ... in first-seen order) to names."""

    def __init__(self, user_map: dict[str, str] | None = None):
        self.user_map = dict(user_map or {})
        self.ids: dict[str, int] = {}

    def name_for(self, video_id: str, obj_id: int, phrase: str | None) -> str:
        for key in (f"{video_id}/{obj_id}", video_id, phrase):
            if key and key in self.user_map:
                return self.user_map[key]
        return (phrase or "").strip() or DEFAULT_CATEGORY

    def id_for(self, name: str) -> int:
        return self.ids.setdefault(name, len(self.ids) + 1)

    def coco(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": n, "supercategory": "object"} for n, i in self.ids.items()]
