"""Flags as files: every flag and the environments document, written to and read from a
JSON file, a YAML file (chosen by the extension; needs PyYAML, the ``yaml`` extra) or a
directory tree with one file per flag.

A file holds what ZooKeeper held when it was exported, with each flag's znode version, so
that an import can refuse a flag someone changed since::

    {"format": "django-zkflags/1",
     "flags": {"new-checkout": {"everyone": null, "percent": 10.0, ..., "version": 3}},
     "environments": {"parents": {...}, "hosts": {...}}, "environments_version": 1}

A directory tree is ``flags/<name>.json`` (one document each, with its ``version``) and
``environments.json`` (``{"document": ..., "version": ...}``). Names are the keys (or the
file names); a version may be left out (a hand-written file: the flag is created, or
changed from whatever version ZooKeeper holds, as with ``--force``).

Reading validates nothing about flags (that is the import's job, all of it before any
write); it refuses what is not this format, saying where.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rules import InvalidFlag

FORMAT = "django-zkflags/1"
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class FlagFile:
    """What a file holds: flag documents by name (each may carry its ``version``), and the
    environments document with its version (None: the file says nothing about them)."""

    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    environments: dict[str, Any] | None = None
    environments_version: int | None = None


def kind_of(path: Path) -> str:
    """ "json", "yaml" or "directory" (an existing directory, or a path without a suffix)."""
    if path.suffix.lower() == ".json":
        return "json"
    if path.suffix.lower() in YAML_SUFFIXES:
        return "yaml"
    if path.is_dir() or not path.suffix:
        return "directory"
    raise InvalidFlag(f"{path}: use a .json or .yaml file, or a directory")


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise InvalidFlag(
            "YAML needs PyYAML: pip install 'django-zkflags[yaml]' (or use a .json file)"
        ) from None
    return yaml


def _document(flags: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {k: v for k, v in doc.items() if k != "name"} for name, doc in flags.items()}


def write(path: Path, content: FlagFile) -> None:
    kind = kind_of(path)
    if kind == "directory":
        _write_directory(path, content)
        return
    data = {
        "format": FORMAT,
        "flags": _document(content.flags),
        "environments": content.environments,
        "environments_version": content.environments_version,
    }
    if kind == "json":
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    else:
        text = _yaml().safe_dump(data, sort_keys=True, allow_unicode=True)
    _write_text(path, text)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_directory(path: Path, content: FlagFile) -> None:
    flags_dir = path / "flags"
    flags_dir.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for name, doc in sorted(content.flags.items()):
        wanted.add(f"{name}.json")
        text = json.dumps({"name": name, **_document({name: doc})[name]}, indent=2, sort_keys=True)
        _write_text(flags_dir / f"{name}.json", text + "\n")
    for stale in flags_dir.glob("*.json"):  # a flag deleted since the last export
        if stale.name not in wanted:
            stale.unlink()
    if content.environments is not None:
        env = {"document": content.environments, "version": content.environments_version}
        _write_text(path / "environments.json", json.dumps(env, indent=2, sort_keys=True) + "\n")


def read(path: Path) -> FlagFile:
    """Read a file or directory written by :func:`write` (or by hand). Raises InvalidFlag
    naming the file and what is wrong."""
    kind = kind_of(path)
    if kind == "directory":
        return _read_directory(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFlag(f"{path}: cannot be read ({exc})") from None
    try:
        data = json.loads(text) if kind == "json" else _yaml().safe_load(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidFlag(f"{path}: not valid {kind.upper()} ({exc})") from None
    except Exception as exc:  # yaml.YAMLError
        raise InvalidFlag(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
        raise InvalidFlag(f"{path}: no 'flags' object (is it a django-zkflags export?)")
    if data.get("format", FORMAT) != FORMAT:
        raise InvalidFlag(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
    flags: dict[str, dict[str, Any]] = {}
    for name, doc in data["flags"].items():
        if not isinstance(doc, dict):
            raise InvalidFlag(f"{path}: flag {name!r} is not an object")
        flags[str(name)] = {**doc, "name": doc.get("name", name)}
    environments = data.get("environments")
    if environments is not None and not isinstance(environments, dict):
        raise InvalidFlag(f"{path}: 'environments' is not an object")
    return FlagFile(flags, environments, _version(data.get("environments_version"), path))


def _read_directory(path: Path) -> FlagFile:
    if not path.is_dir():
        raise InvalidFlag(f"{path}: no such directory")
    content = FlagFile()
    for file in sorted((path / "flags").glob("*.json")):
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidFlag(f"{file}: not a JSON flag document ({exc})") from None
        if not isinstance(doc, dict):
            raise InvalidFlag(f"{file}: not a JSON object")
        content.flags[file.stem] = {**doc, "name": doc.get("name", file.stem)}
    env_file = path / "environments.json"
    if env_file.exists():
        try:
            env = json.loads(env_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidFlag(f"{env_file}: not JSON ({exc})") from None
        if not isinstance(env, dict) or not isinstance(env.get("document"), dict):
            raise InvalidFlag(f"{env_file}: expected {{'document': {{...}}, 'version': n}}")
        content.environments = env["document"]
        content.environments_version = _version(env.get("version"), env_file)
    return content


def _version(value: Any, where: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidFlag(f"{where}: a version must be a whole number, got {value!r}")
    return value
