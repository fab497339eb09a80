"""griffe extension: Sphinx roles in our docstrings (:class:`X`, :func:`~a.b.c`) as code spans.

The docstrings are plain prose with a few reST roles; markdown would print the role names. The
API reference renders ``:class:`~pkg.mod.Name``` as ``Name`` and ``:func:`pkg.f``` as ``pkg.f``
(as Sphinx does), in code font. Nothing is cross-linked, so no reference can fail on a role.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite reST roles in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
