"""reStructuredText (docutils): parsed to a document tree, never rendered; section titles become sections.

Nothing in the file can reach outside it: file insertion (``include``, ``:file:``, ``:url:``) and ``raw``
are disabled, no configuration file is read, and every message docutils would print is dropped along with
the directive it is about, so ``.. raw:: html`` or ``.. include:: /etc/passwd`` add no text at all.
Sphinx's content directives (``versionadded``, ``seealso``...) keep their text; unknown roles
(``:ref:`x <y>```) keep their visible text; unknown directives (``toctree``, ``autoclass``) are dropped.

Two bombs are refused before parsing: blocks indented more than ``MAX_NESTING`` levels deep (docutils
recurses and copies the block at each level) and substitutions that expand past ``MAX_EXPANDED_CHARS``
(``|a|`` → 100 ``|b|`` → 100 ``|c|``...). Files over ``MAX_RST_BYTES`` are refused: docutils reads
about 150 KB/s on one core.
"""
from __future__ import annotations

import io
import logging
import re

from rag.types import Document

from .common import LoadError, heading_sections

log = logging.getLogger(__name__)

MAX_RST_BYTES = 2 << 20
MAX_NESTING = 48
MAX_EXPANDED_CHARS = 16 << 20

_SETTINGS = {
    "file_insertion_enabled": False, "raw_enabled": False,   # no include/:file:/:url:, no raw HTML/LaTeX
    "_disable_config": True,                                  # no docutils.conf from the working directory
    "report_level": 5, "halt_level": 5, "exit_status_level": 5,
    "traceback": True,            # raise instead of printing and calling sys.exit()
    "syntax_highlight": "none", "smart_quotes": False, "input_encoding": "unicode",
    "line_length_limit": 1 << 30, "pep_references": False, "rfc_references": False,
    "strip_comments": True,
}

# Sphinx directives whose content is text: parsed like a container; the argument is kept as a line
_VERSION_WORDS = {"versionadded": "New in version", "versionchanged": "Changed in version",
                  "deprecated": "Deprecated since version", "versionremoved": "Removed in version"}
_CONTENT_DIRECTIVES = ("seealso", "centered", "hlist", "glossary", "only", "tab", "tabs", "group-tab",
                       "code-tab", "card", "dropdown", "tab-set", "tab-item", "grid", "grid-item",
                       "grid-item-card", "ifconfig", *_VERSION_WORDS)
_QUIET_ARGUMENT = {"only", "ifconfig", "tabs", "tab-set", "grid", "hlist", "glossary", "seealso"}
_ROLE = re.compile(r"^:[\w.:+-]+:`(.*)`_{0,2}$", re.DOTALL)
_TARGET = re.compile(r"^(.*?)\s*<([^<>]*)>$", re.DOTALL)
_SUBST_DEF = re.compile(r"^\.\.[ \t]+\|([^|\n]+)\|[ \t]+[\w-]+::(.*)$")
_SUBST_REF = re.compile(r"\|([^|\s](?:[^|\n]*[^|\s])?)\|")
# messages (and the directive text they quote), comments, resolved definitions, unrendered parts
_SKIP = ("system_message", "comment", "substitution_definition", "pending", "raw", "image", "meta", "decoration")
_registered = False


def load_rst(text: str, shown: str, nbytes: int, encoding: str) -> Document:
    try:
        from docutils import nodes
        from docutils.core import publish_doctree
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("docutils is not installed: `pip install docutils`.") from None
    if nbytes > MAX_RST_BYTES:
        raise LoadError(f"{shown}: {nbytes / 2**20:.1f} MiB of reStructuredText is more than the "
                        f"{MAX_RST_BYTES >> 20} MiB read as reStructuredText. Split it into smaller files, or "
                        "rename it to .txt to index it as plain text.")
    _check_bombs(text, shown)
    _register_sphinx_directives()
    try:
        tree = publish_doctree(text, settings_overrides={**_SETTINGS, "warning_stream": io.StringIO()})
    except RecursionError:
        raise LoadError(f"{shown}: the reStructuredText nests blocks too deeply to be read. Flatten the "
                        "nesting (fewer levels of indentation) and upload it again.") from None
    except Exception as e:  # docutils raises many kinds of errors on hostile input
        log.debug("%s: docutils cannot parse the file: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the reStructuredText cannot be parsed. Check it with `rst2html` (docutils), "
                        "fix what it reports, or rename it to .txt to index it as plain text.") from None
    body, heads = _Walker(nodes, tree).walk(tree)
    if not body.strip():
        raise LoadError(f"{shown}: the reStructuredText has no text (only directives or comments). "
                        "Check that you picked the right file.")
    title = " ".join(str(tree.get("title", "") or "").split()) or (heads[0][1] if heads else "")
    return Document(shown, shown, body, title, heading_sections(heads, len(body)),
                    {"format": "rst", "bytes": nbytes, "encoding": encoding})


def _check_bombs(text: str, shown: str) -> None:
    """Refuse deep indentation and substitution amplification before docutils sees them."""
    stack = [0]
    defs: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        body = line.lstrip(" \t")
        if not body:
            continue
        indent = len(line[:len(line) - len(body)].expandtabs(8))
        while stack and stack[-1] > indent:
            stack.pop()
        if not stack or stack[-1] < indent:
            stack.append(indent)
            if len(stack) > MAX_NESTING:
                raise LoadError(f"{shown}: the reStructuredText nests indented blocks more than {MAX_NESTING} "
                                "levels deep. Flatten the nesting and upload it again.")
        m = _SUBST_DEF.match(line) if indent == 0 else None
        if m:
            current = " ".join(m.group(1).split()).lower()
            defs[current] = m.group(2)
        elif current is not None and indent > 0:
            defs[current] += " " + body
        else:
            current = None
    if not defs:
        return
    sizes: dict[str, int] = {}

    def size(name: str, depth: int = 0) -> int:
        if name in sizes:
            return sizes[name]
        sizes[name] = len(defs[name])  # a cycle counts once (docutils refuses it anyway)
        total = len(defs[name])
        if depth < 64:
            for ref in _SUBST_REF.findall(defs[name]):
                ref = " ".join(ref.split()).lower()
                if ref in defs:
                    total += size(ref, depth + 1)
                    if total > MAX_EXPANDED_CHARS:
                        break
        sizes[name] = total
        return total

    expanded = 0
    for ref in _SUBST_REF.findall(text):
        ref = " ".join(ref.split()).lower()
        if ref in defs:
            expanded += size(ref)
            if expanded > MAX_EXPANDED_CHARS:
                raise LoadError(f"{shown}: the reStructuredText's substitutions (|name| replacements that use "
                                f"other substitutions) expand to more than {MAX_EXPANDED_CHARS >> 20} MiB of "
                                "text. Remove the nested substitutions and upload it again.")


def _register_sphinx_directives() -> None:
    """Register the Sphinx content directives docutils does not know (once, process-wide)."""
    global _registered
    if _registered:
        return
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives
    from docutils.parsers.rst.languages import en

    class Passthrough(Directive):
        optional_arguments = 1
        final_argument_whitespace = True
        has_content = True
        option_spec = None  # options are accepted and ignored

        def run(self):
            node = nodes.container()
            arg = " ".join(self.arguments).strip()
            if arg and self.name in _VERSION_WORDS:  # ".. versionadded:: 2.0 what changed"
                version, *rest = arg.split(None, 1)
                what = " ".join(" ".join(rest).split())
                node += nodes.paragraph(text=f"{_VERSION_WORDS[self.name]} {version}" + (f": {what}" if what else "."))
            elif arg and self.name not in _QUIET_ARGUMENT:
                node += nodes.paragraph(text=arg)
            if self.content:
                self.state.nested_parse(self.content, self.content_offset, node)
            return [node]

    class AnyOptions(dict):
        def __getitem__(self, key):
            return directives.unchanged

        def __contains__(self, key):
            return True

        def __bool__(self):  # docutils parses options only when the spec is truthy
            return True

    Passthrough.option_spec = AnyOptions()
    for name in _CONTENT_DIRECTIVES:
        if name not in en.directives:  # never replace one of docutils' own
            directives.register_directive(name, Passthrough)
    _registered = True


class _Walker:
    """The tree's visible text: blocks apart by blank lines, table rows as ``a | b``; headings recorded."""

    def __init__(self, nodes, tree):
        self.n = nodes
        # problematic text whose message says "disabled" (a raw role) is dropped, not shown as text
        self.refused = {i for m in _messages(tree, nodes) if "disabled" in m.astext() for i in m.get("ids", ())}
        self.parts: list[str] = []
        self.pos = 0
        self.heads: list[tuple[int, str]] = []
        self.skip = tuple(getattr(nodes, k) for k in _SKIP if hasattr(nodes, k))

    def add(self, text: str) -> int | None:
        text = text.strip()
        if not text:
            return None
        if self.parts:
            self.parts.append("\n\n")
            self.pos += 2
        at = self.pos
        self.parts.append(text)
        self.pos += len(text)
        return at

    def walk(self, tree) -> tuple[str, list[tuple[int, str]]]:
        n = self.n
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, self.skip):
                continue
            if isinstance(node, n.topic) and "contents" in node.get("classes", ()):
                continue  # a generated table of contents repeats the headings
            if isinstance(node, n.title):
                text = self.inline(node)
                at = self.add(text)
                if at is not None and isinstance(node.parent, (n.section, n.document)):
                    self.heads.append((at, " ".join(text.split())))
            elif isinstance(node, n.row):
                self.add(" | ".join(" ".join(self.inline(e).split()) for e in node.children
                                    if isinstance(e, n.entry)))
            elif isinstance(node, n.TextElement):
                self.add(self.inline(node))
            elif isinstance(node, n.Element):
                stack.extend(reversed(node.children))
            elif isinstance(node, n.Text):
                self.add(str(node))
        return "".join(self.parts), self.heads

    def inline(self, node) -> str:
        """The visible text under ``node``; unknown roles keep their text, skipped nodes add nothing."""
        n = self.n
        out: list[str] = []
        stack = [node]
        while stack:
            cur = stack.pop()
            if isinstance(cur, n.Text):
                out.append(str(cur))
            elif isinstance(cur, self.skip):
                continue
            elif isinstance(cur, n.problematic):
                if cur.get("refid") not in self.refused:
                    out.append(_role_text(cur.astext()))
            elif isinstance(cur, n.Element):
                if isinstance(cur, n.TextElement) and cur is not node and not isinstance(cur, n.Inline):
                    stack.append(n.Text("\n"))  # a block inside a block (a paragraph in a table cell)
                    stack.extend(reversed(cur.children))
                    stack.append(n.Text("\n"))
                else:
                    stack.extend(reversed(cur.children))
        return "".join(out)


def _messages(tree, nodes):
    finder = getattr(tree, "findall", None) or tree.traverse  # findall: docutils >= 0.18
    return finder(nodes.system_message)


def _role_text(raw: str) -> str:
    """``:ref:`Title <target>``` → ``Title``; ``:usdcpp:`UsdStage``` → ``UsdStage``; other text as is."""
    m = _ROLE.match(raw.strip())
    if not m:
        return raw
    inner = m.group(1)
    t = _TARGET.match(inner)
    if t:
        inner = t.group(1) or t.group(2)
    return inner.lstrip("~!")
