"""Griffe extension: render jaxdrop's reST-flavoured Google docstrings as Markdown.

jaxdrop's docstrings are Google style (``Args:`` / ``Returns:``) but use a few reST
constructs that Sphinx understands and Markdown does not. Before mkdocstrings parses a
docstring, this extension rewrites them in place (only for the documentation build; the
source and ``help()`` are unchanged):

* an ``Args:`` entry for several parameters (``a, b: text``) becomes one entry each;
* ``:func:`x```, ``:class:``, ``:meth:``, ``:mod:``, ``:attr:``, ... roles become
  *optional* autorefs cross-references: ``x`` is resolved in the docstring's scope with
  griffe (``sample`` in ``jaxdrop.mc`` is ``jaxdrop.mc.sample``), linked when that object
  is rendered somewhere in the site, plain code otherwise (``jax.vmap``), never a warning;
* ``:math:`...``` becomes ``\\(...\\)`` and ``.. math::`` blocks become ``$$ ... $$``
  (rendered by ``pymdownx.arithmatex`` and MathJax);
* a paragraph ending in ``::`` loses one colon and its indented literal block becomes a
  fenced code block;
* doctest blocks (``>>>`` lines up to the next blank line) become ``pycon`` fences, with
  ``# doctest:`` flags removed;
* list items' bodies are indented by 4 (reST aligns them with the item's text), so that a
  formula or a second paragraph stays inside its item.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|attr|data|obj|exc|const):`([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*?)\s*$")
_LITERAL = re.compile(r"^(\s*)(.*?)(\s*)::\s*$")
_SECTION = re.compile(
    r"^(Args|Arguments|Params|Parameters|Attributes|Other Parameters|Keyword Args|Keyword Arguments):\s*$"
)
_MULTI = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+):\s+(.*)$")
_ITEM = re.compile(r"^\s*((?:\d+[.)]|[-*+])\s+)\S")
_FENCE = re.compile(r"^\s*(```|~~~)")
_DOCTEST_FLAG = re.compile(r"\s*#\s*doctest:.*$")
_KINDS = {  # the griffe kinds (Kind.value) a role may point to
    "func": ("function",),
    "meth": ("function",),
    "class": ("class",),
    "exc": ("class",),
    "mod": ("module",),
    "attr": ("attribute",),
    "data": ("attribute",),
    "const": ("attribute",),
}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blank(line: str) -> bool:
    return not line.strip()


def _take_block(lines: list[str], i: int, base: int) -> tuple[list[str], int]:
    """Lines from ``i`` on that are blank or indented more than ``base`` (a reST body)."""
    body: list[str] = []
    while i < len(lines) and (_blank(lines[i]) or _indent(lines[i]) > base):
        body.append(lines[i])
        i += 1
    while body and _blank(body[-1]):  # trailing blank lines belong to what follows
        body.pop()
        i -= 1
    while body and _blank(body[0]):
        body.pop(0)
    if body:
        cut = min(_indent(b) for b in body if not _blank(b))
        body = [b[cut:] for b in body]
    return body, i


def _split_multi_params(lines: list[str]) -> list[str]:
    """``a, b: text`` in an ``Args:``/``Attributes:`` section becomes ``a: text`` and ``b: text``.

    The NumPy convention of documenting several parameters in one entry; griffe's Google
    parser takes ``a, b`` for one unknown parameter. One entry each gets each its type and
    default from the signature.
    """
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not _SECTION.match(line):
            continue
        item_indent = None
        while i < len(lines) and (_blank(lines[i]) or _indent(lines[i]) > 0):
            line = lines[i]
            if item_indent is None and not _blank(line):
                item_indent = _indent(line)
            m = _MULTI.match(line)
            if m and _indent(line) == item_indent:
                block = [m.group(3)]
                i += 1
                while i < len(lines) and not _blank(lines[i]) and _indent(lines[i]) > item_indent:
                    block.append(lines[i])
                    i += 1
                for name in m.group(2).split(","):
                    out.append(f"{m.group(1)}{name.strip()}: {block[0]}")
                    out.extend(block[1:])
                continue
            out.append(line)
            i += 1
    return out


def _normalise_lists(lines: list[str]) -> list[str]:
    """Indent the body of every list item by 4 columns from its marker.

    reST indents an item's continuation to its text (``1. ``: 3 columns, ``- ``: 2);
    Python-Markdown only puts blocks (a formula, a nested list) in an item when they are
    indented by 4, so this shifts each item's lines (and nested items') to match. An item
    that follows a multi-paragraph item gets a blank line before it, which reST does not
    need and Python-Markdown does.
    """
    out: list[str] = []
    stack: list[list[int]] = []  # open items: [content column, extra indent, had a blank line]
    for line in lines:
        if _blank(line):
            for item in stack:
                item[2] = 1
            out.append(line)
            continue
        ind = _indent(line)
        ended_loose = False
        while stack and ind < stack[-1][0]:
            ended_loose = ended_loose or bool(stack.pop()[2])
        m = _ITEM.match(line)
        if m and ended_loose and out and not _blank(out[-1]):
            out.append("")
        out.append(" " * sum(item[1] for item in stack) + line)
        if m:
            content = ind + len(m.group(1))
            stack.append([content, max(0, ind + 4 - content), 0])
    return out


def _separate(out: list[str]) -> None:
    """A blank line before a block, unless there is one already."""
    if out and not _blank(out[-1]):
        out.append("")


def _fence(out: list[str], pad: str, lang: str, body: list[str]) -> None:
    _separate(out)
    if lang == "pycon":
        body = [_DOCTEST_FLAG.sub("", b) for b in body]
    out.append(f"{pad}```{lang}")
    out.extend(f"{pad}{b}" if b.strip() else "" for b in body)
    out.append(f"{pad}```")


class RstToMarkdown(griffe.Extension):
    """Rewrite the reST bits of every docstring of a package as Markdown."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._visit(pkg, set())

    def _visit(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = self.convert(obj.docstring.value, obj)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member, seen)  # type: ignore[arg-type]

    # -- block level ----------------------------------------------------------------

    def convert(self, text: str, obj: griffe.Object) -> str:
        lines = _normalise_lists(_split_multi_params(text.split("\n")))
        out: list[str] = []  # converted text
        prose: list[str] = []  # text lines not yet given their inline conversion

        def flush() -> None:
            # Inline markup may span lines (a long :math:`...`), so convert whole runs.
            if prose:
                out.extend(self.inline("\n".join(prose), obj).split("\n"))
                prose.clear()

        i = 0
        while i < len(lines):
            line = lines[i]
            if _FENCE.match(line):  # an existing Markdown fence: copy it untouched
                flush()
                out.append(line)
                i += 1
                while i < len(lines):
                    out.append(lines[i])
                    i += 1
                    if _FENCE.match(out[-1]):
                        break
                continue

            m = _MATH_DIRECTIVE.match(line)
            if m:
                flush()
                pad, first = m.group(1), m.group(2)
                body, i = _take_block(lines, i + 1, len(pad))
                math = ([first] if first else []) + body
                _separate(out)
                out.append(f"{pad}$$")
                out.extend(f"{pad}{b}" if b.strip() else "" for b in math)
                out.append(f"{pad}$$")
                if i < len(lines) and not _blank(lines[i]):
                    out.append("")
                continue

            if line.lstrip().startswith(">>>"):
                flush()
                pad = " " * _indent(line)
                body = []
                while i < len(lines) and not _blank(lines[i]) and _indent(lines[i]) >= len(pad):
                    body.append(lines[i][len(pad) :])
                    i += 1
                _fence(out, pad, "pycon", body)
                if i < len(lines) and not _blank(lines[i]):
                    out.append("")
                continue

            m = _LITERAL.match(line)
            if m and not line.lstrip().startswith(".."):
                pad, words = m.group(1), m.group(2)
                body, j = _take_block(lines, i + 1, len(pad))
                if body:
                    if words:
                        prose.append(f"{pad}{words}:")
                    flush()
                    lang = "pycon" if body[0].lstrip().startswith(">>>") else "python"
                    _fence(out, pad, lang, body)
                    i = j
                    if i < len(lines) and not _blank(lines[i]):
                        out.append("")
                    continue

            prose.append(line)
            i += 1
        flush()
        return "\n".join(out)

    # -- inline ---------------------------------------------------------------------

    def inline(self, text: str, obj: griffe.Object) -> str:
        text = _MATH_ROLE.sub(lambda m: rf"\({m.group(1)}\)", text)
        return _ROLE.sub(lambda m: self._xref(m.group(1), m.group(2), obj), text)

    def _xref(self, role: str, target: str, obj: griffe.Object) -> str:
        target = target.strip()
        shown = target
        if "<" in target and target.endswith(">"):  # :func:`title <path>`
            shown, target = (s.strip() for s in target[:-1].split("<", 1))
        target = target.lstrip("!")
        if target.startswith("~"):
            target = target[1:]
            shown = target.rsplit(".", 1)[-1]
        target = target.lstrip(".")
        path = self._resolve(role, target, obj)
        return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

    @staticmethod
    def _resolve(role: str, target: str, obj: griffe.Object) -> str:
        """Resolve ``target`` as Python would from ``obj``, innermost scope first.

        A scope's name of another kind than the role asks for is skipped, so
        ``:func:`max_norm``` in a class with a ``max_norm`` attribute is the module's
        function. Unresolvable names (other packages) are returned as written.
        """
        head, _, rest = target.partition(".")
        first: str | None = None
        scope: griffe.Object | None = obj
        while scope is not None:
            try:
                found = scope.resolve(head)
            except Exception:  # griffe.NameResolutionError, alias resolution errors
                scope = scope.parent
                continue
            path = f"{found}.{rest}" if rest else found
            first = first or path
            try:
                kind = obj.modules_collection.get_member(path).kind.value
            except Exception:  # outside the loaded packages
                return path
            if kind in _KINDS.get(role, (kind,)):
                return path
            scope = scope.parent
        return first or target
