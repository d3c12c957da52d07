"""Griffe extension for the documentation site: Sphinx cross-reference roles in docstrings as inline code.

The docstrings write ``:class:`Budget``` or ``:func:`~ttc_graph.specs.build_graph```; mkdocstrings renders Markdown,
where those roles would show literally. This rewrites each role to inline code of the name it points at (the last
dotted part when the target starts with ``~``, as Sphinx shows it). Only the rendered text changes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    """Replace Sphinx roles with inline code in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
