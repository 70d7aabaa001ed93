"""Rows -> documents: the provenance fields copied from a record, and bad-row messages.

Shared by the readers whose records carry the text in `text_field` (json, parquet, hf).
"""

from __future__ import annotations

from typing import Any

# Record fields copied into a document's provenance when a row has them.
# (max_stars_repo_* are starcoderdata's names for the repository and path.)
PROVENANCE_FIELDS = ("repo_name", "path", "title", "url", "id", "max_stars_repo_name",
                     "max_stars_repo_path")
FIRST_RECORD = " (the first record: the whole source would fail)"


def jsonable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else str(value)


def add_provenance(source: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """`source` plus the PROVENANCE_FIELDS that `row` holds (None counts as absent)."""
    for key in PROVENANCE_FIELDS:
        value = row.get(key)
        if value is not None:
            source[key] = jsonable(value)
    return source


def fields_present(row: dict[str, Any]) -> str:
    # Columnar formats fill fields that other rows have with None: those are not "present".
    names = [k for k, v in row.items() if v is not None]
    return ", ".join(names) if names else "none"


def bad_field(where: str, text_field: str, row: Any) -> str:
    """Why `row` gives no document: not an object, no text field, or a non-string one."""
    if not isinstance(row, dict):
        return (f"{where}: a {type(row).__name__}, not an object; each record must be an "
                f"object with a {text_field!r} field")
    value = row.get(text_field)
    if value is None:
        return (f"{where}: no text field {text_field!r} (fields present: "
                f"{fields_present(row)}); set text_field in the recipe")
    return (f"{where}: text field {text_field!r} holds a {type(value).__name__}, not a string; "
            "set text_field in the recipe to a string field")
