"""What a config or a check's JSON says (a host name, a title, an impact), made safe for
where it is written. Every text and markdown writer goes through here: ``check``'s table,
``--explain`` and ``--output markdown``, ``report``'s markdown, ``catalog --format
markdown`` and ``availability``'s text and markdown (HTML is escaped by ``html.escape``
where it is written).

- :func:`visible`: for a terminal. Control characters (ESC, BEL, a newline, ...) and the
  bidirectional overrides that reorder what is shown are written as Python escapes
  (``\\x1b``), never sent raw to the terminal.
- :func:`markdown`: for text in a markdown line. Every character that can start markup
  (emphasis, code, links, HTML, tables, headings) is backslash-escaped, so the text renders
  as it is written: ``<h1>`` stays text, ``[l](javascript:...)`` is no link.
- :func:`markdown_code` and :func:`markdown_fence`: for an inline code span and a code
  block, whose fence is longer than any run of backticks inside (a backslash escapes
  nothing there).
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL, and the bidirectional embedding, override and isolate marks
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Markup anywhere in a line; an underscore only where it can open or close emphasis (not
# between two letters or digits, so web_server stays as it is written).
_MARKUP = re.compile(r"[\\`*\[\]<>&|~#]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# Markup only at the start of a line: a list item, a setext underline, a numbered item
_LINE_START = re.compile(r"^([-+=]|\d+[.)])")
_BACKTICKS = re.compile(r"`+")


def visible(text: object) -> str:
    """``text`` with control characters written as escapes (one line, safe for a terminal)."""
    text = str(text)
    if text.isprintable():  # the common case: nothing to do
        return text
    return _INVISIBLE.sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def markdown(text: object) -> str:
    """``text`` for a markdown line, rendered exactly as written, control characters
    shown as escapes; safe at the start of a line and in a table cell."""
    escaped = _MARKUP.sub(r"\\\g<0>", visible(text))
    if escaped.startswith(" "):  # at a line's start, spaces would let " 1." or "    code" through
        return "&#32;" + escaped[1:]  # a space, as inline text: nothing after it starts a block
    found = _LINE_START.match(escaped)
    if found is not None:  # "1." or "-" first: escape its punctuation
        marker = found.group()
        escaped = f"{marker[:-1]}\\{marker[-1]}{escaped[len(marker):]}"
    return escaped


def markdown_code(text: object) -> str:
    """``text`` as an inline code span, however many backticks it holds."""
    shown = visible(text)
    fence = "`" * (_longest_backticks(shown) + 1)
    if shown.startswith(("`", " ")) or shown.endswith(("`", " ")) or not shown:
        shown = f" {shown} "  # CommonMark strips one space each side
    return f"{fence}{shown}{fence}"


def markdown_fence(text: object, info: str = "") -> str:
    """``text`` (lines) as a fenced code block no line of it can close."""
    lines = [visible(line) for line in str(text).split("\n")]
    fence = "`" * max(3, max(_longest_backticks(line) for line in lines) + 1)
    return "\n".join([fence + info, *lines, fence])


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in _BACKTICKS.findall(text)), default=0)
