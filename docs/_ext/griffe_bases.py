"""Griffe extension: a class's private base (``_Stochastic``) is shown as that base's own bases.

``jaxdrop.nnx``'s variant layers share a private helper class; the API reference would
show ``Bases: _Stochastic``, a name the reader cannot import or look up. This extension
replaces every base whose name starts with an underscore, and that griffe can find, by
that base's bases (recursively), so the page shows the public ancestry
(``Bases: flax.nnx.Module``). Only the documentation build sees the change.
"""

from __future__ import annotations

from typing import Any

import griffe


def _private(base: str | griffe.Expr) -> bool:
    return str(base).rsplit(".", 1)[-1].startswith("_")


class PublicBases(griffe.Extension):
    """Replace private bases by their own (public) bases in every class of a package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._visit(pkg, set())

    def _visit(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if isinstance(obj, griffe.Class):
            obj.bases = self._public(obj.bases, obj)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member, seen)  # type: ignore[arg-type]

    def _public(self, bases: list[str | griffe.Expr], obj: griffe.Class) -> list[str | griffe.Expr]:
        out: list[str | griffe.Expr] = []
        for base in bases:
            target = None
            if _private(base) and isinstance(base, griffe.Expr):
                try:
                    target = obj.modules_collection.get_member(base.canonical_path)
                except (KeyError, ValueError):
                    target = None
            if isinstance(target, griffe.Class):
                out.extend(b for b in self._public(target.bases, target) if str(b) not in map(str, out))
            else:
                out.append(base)
        return out
