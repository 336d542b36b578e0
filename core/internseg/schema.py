"""The workflow's config checked against its JSON schema, with one line for what is wrong.

Snakemake's ``validate`` prints the whole schema (about 250 lines) for one unknown key; this
check runs first and names the key, where it is and what may go there.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import InputError
from .io import read_yaml


def _where(error) -> str:
    return ".".join(map(str, error.absolute_path))


def describe(error) -> str:
    """One line for jsonschema's best match among a document's errors."""
    where = _where(error)
    at = f"{where}: " if where else ""
    schema, instance = error.schema, error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        unknown = [k for k in instance if k not in allowed]
        if allowed and unknown:
            keys = ", ".join(repr(k) for k in unknown)
            # the schema's own note of where a key of an earlier release went
            moved = [f"{key}: {schema['x-moved'][key]}" for key in unknown
                     if key in schema.get("x-moved", {})]
            return (f"{at}unknown key{'s' if len(unknown) > 1 else ''} {keys} "
                    f"(allowed: {', '.join(allowed)})"
                    + (f"; {'; '.join(moved)}" if moved else ""))
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in instance]
        return f"{at}missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
    return f"{at}{error.message}"


def non_finite(value, where: str = "") -> str | None:
    """``<key path>: <value>`` of the first NaN or infinity in ``value``: YAML's ``.nan``
    passes every bound of a schema (a comparison with NaN is never true), and ``.inf`` is no
    setting."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}: {value}"
    items = (value.items() if isinstance(value, dict) else
             enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = non_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def check_config(config: dict, schema_file: str | Path, source: str = "config.yaml") -> None:
    """Raise one :class:`InputError` line for the most relevant error of ``config`` against
    the schema (jsonschema's ``best_match``), or for a NaN or infinity anywhere in it;
    nothing when it is valid."""
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    found = non_finite(config)
    if found is not None:
        raise InputError(f"{source}: {found} is not a finite number")

    schema = read_yaml(schema_file, "JSON schema")
    validator = validator_for(schema)(schema)
    error = best_match(validator.iter_errors(config))
    if error is not None:
        raise InputError(f"{source}: {describe(error)}")
