"""Where a project uses its flags: a scan of Python files and templates for flag names
passed to the public API, to find flags nothing uses any more and uses of flags that do
not exist.

A scan sees names written in the source. A name built at run time
(``flag_is_active(request, f"checkout-{variant}")``) cannot be resolved: such calls are
reported as *dynamic*, with where they are, so that nobody takes "unused" on the scan's
word alone.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Functions whose first string argument (or second, after the request or user) is a
#: flag name. Matched by the called name, whatever it was imported as a part of.
NAME_AFTER_SUBJECT = frozenset({"flag_is_active", "flag_is_active_for_user", "aflag_is_active"})
NAME_FIRST = frozenset({"get_value", "aget_value", "flag_required", "override_flag", "explain"})
#: Methods of ``request.flags`` (RequestFlags) taking the name first.
REQUEST_FLAGS_METHODS = frozenset({"is_active", "value"})

TEMPLATE_SUFFIXES = (".html", ".htm", ".txt", ".xml", ".jinja", ".j2", ".django")
SKIP_DIRS = frozenset(
    {".git", ".hg", ".venv", "venv", "env", "node_modules", "__pycache__", ".tox", "build", "dist"}
)
TEMPLATE_TAG = re.compile(r"{%-?\s*(flag|flag_value)\s+(\S+)")


@dataclass(frozen=True)
class Reference:
    name: str | None  # None: built at run time
    path: str
    line: int
    how: str  # "flag_is_active", "{% flag %}", "flag_name", "declared", ...


@dataclass
class Scan:
    references: list[Reference] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # files that could not be read

    @property
    def names(self) -> set[str]:
        return {r.name for r in self.references if r.name is not None}

    @property
    def dynamic(self) -> list[Reference]:
        return [r for r in self.references if r.name is None]


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _called_name(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_request_flags(node: ast.AST) -> bool:
    """``<something>.flags`` (``request.flags``, ``self.request.flags``)."""
    return isinstance(node, ast.Attribute) and node.attr == "flags"


class _PythonVisitor(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.found: list[Reference] = []

    def _add(self, node: ast.AST | None, line: int, how: str) -> None:
        self.found.append(Reference(_literal(node), self.path, line, how))

    def visit_Call(self, node: ast.Call) -> None:
        called = _called_name(node.func)
        if called in NAME_AFTER_SUBJECT:
            arg = node.args[1] if len(node.args) > 1 else _keyword(node, "name")
            if arg is not None:
                self._add(arg, node.lineno, called)
        elif called in NAME_FIRST:
            arg = node.args[0] if node.args else _keyword(node, "name")
            if arg is not None:
                self._add(arg, node.lineno, called)
        elif (
            called in REQUEST_FLAGS_METHODS
            and isinstance(node.func, ast.Attribute)
            and _is_request_flags(node.func.value)
            and node.args
        ):
            self._add(node.args[0], node.lineno, f"request.flags.{called}")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _is_request_flags(node.value):
            self._add(node.slice, node.lineno, "request.flags[...]")
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for statement in node.body:
            if isinstance(statement, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "flag_name"
                for target in statement.targets
            ):
                self._add(statement.value, statement.lineno, "flag_name")
        self.generic_visit(node)


def _keyword(node: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def scan_python(source: str, path: str) -> list[Reference]:
    visitor = _PythonVisitor(path)
    visitor.visit(ast.parse(source, filename=path))
    return visitor.found


def scan_template(source: str, path: str) -> list[Reference]:
    found = []
    for match in TEMPLATE_TAG.finditer(source):
        tag, argument = match.groups()
        line = source.count("\n", 0, match.start()) + 1
        name = None
        if len(argument) >= 2 and argument[0] == argument[-1] and argument[0] in "\"'":
            name = argument[1:-1]
        found.append(Reference(name, path, line, "{% " + tag + " %}"))
    return found


def _files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(
                d for d in subdirs if d not in SKIP_DIRS and "site-packages" not in d
            )
            for name in sorted(files):
                yield Path(directory) / name


def scan(roots: Iterable[Path], declared: Iterable[str] = ()) -> Scan:
    result = Scan()
    for name in declared:
        result.references.append(Reference(name, "settings.ZKFLAGS['FLAGS']", 0, "declared"))
    for path in _files(roots):
        is_python = path.suffix == ".py"
        if not is_python and path.suffix not in TEMPLATE_SUFFIXES:
            continue
        try:
            source = path.read_text(encoding="utf-8")
            found = (
                scan_python(source, str(path)) if is_python else scan_template(source, str(path))
            )
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
            result.errors.append(f"{path}: {exc}")
            continue
        result.references.extend(found)
    return result
