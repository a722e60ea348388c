# -*- test-case-name: tests.test_config -*-
"""Turning a config ``cmd``/``cmdStop`` string into an argv, exactly as llama-swap does.

llama-swap never runs a shell: it drops comment lines, joins backslash continuations and
splits with the POSIX dialect of ``github.com/billziss-gh/golib/shlex``. Python's ``shlex``
differs in small ways (it treats ``\\r`` as blank, keeps the backslash of ``"\\$"`` and raises
on an unterminated quote), so the Go state machine is reproduced here instead.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["insert_literal", "split_command", "split_command_checked", "strip_comments"]

_BLANKS = frozenset(" \t\n")
_QUOTES = frozenset("'\"")
_DQUOTE_ESCAPABLE = frozenset('$`"\\\n')


def strip_comments(text: str) -> str:
    """Drop the lines whose trimmed text starts with ``#``.

    Done before macro expansion too, so a ``${macro}`` inside a comment is never expanded.
    """
    return "\n".join(line for line in text.split("\n") if not line.strip().startswith("#"))


def _join_continuations(text: str) -> str:
    """Comment lines go; a trailing backslash becomes a space (llama-swap's SanitizeCommand)."""
    lines: list[str] = []
    for line in text.split("\n"):
        trimmed = line.strip()
        if trimmed.startswith("#"):
            continue
        lines.append(trimmed[:-1] + " " if trimmed.endswith("\\") else line)
    return "\n".join(lines)


def _posix_split(text: str) -> tuple[list[str], bool]:
    """The golib ``shlex.Posix.Split`` state machine; also says whether a quote was left open.

    Blanks are space, tab and newline (not CR). Outside quotes a backslash escapes any
    character and a backslash-newline vanishes. Inside double quotes it escapes only
    ``$ ` " \\`` and newline. Single quotes escape nothing. ``""`` yields an empty argument.
    """
    tokens: list[str] = []
    token: list[str] | None = None
    quote = ""  # the open quote character, "" when outside quotes
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        nxt = text[i + 1] if i + 1 < n else None
        escapes = quote == "" or (quote == '"' and (nxt is None or nxt in _DQUOTE_ESCAPABLE))
        if ch == "\\" and escapes:
            i += 2
            if nxt is None or nxt == "\n":
                continue  # line continuation / trailing backslash: dropped
            if token is None:
                token = []
            token.append(nxt)
            continue
        i += 1
        if quote:
            if ch == quote:
                quote = ""
            else:
                assert token is not None
                token.append(ch)
        elif ch in _QUOTES:
            quote = ch
            if token is None:
                token = []
        elif ch in _BLANKS:
            if token is not None:
                tokens.append("".join(token))
                token = None
        else:
            if token is None:
                token = []
            token.append(ch)
    if token is not None:
        tokens.append("".join(token))
    return tokens, bool(quote)


def _escaped(value: str, quote: str) -> str:
    """``value`` written so that ``_posix_split`` reads it back unchanged where it stands:
    outside quotes, inside ``"..."`` or inside ``'...'``. Outside quotes, blanks are left
    as they are: they separate arguments, as an unquoted variable does in a shell."""
    if quote == "'":
        return value.replace("'", "'\\''")
    if quote == '"':
        return "".join("\\" + c if c in _DQUOTE_ESCAPABLE else c for c in value)
    return "".join("\\" + c if c in _QUOTES or c == "\\" else c for c in value)


def insert_literal(text: str, literals: Mapping[str, str]) -> str:
    """Replace each placeholder of ``literals`` in a command string by its value, escaped
    for the quoting in effect there, so that splitting the command yields the value's
    characters literally (an env value's quotes never act as command-line quotes)."""
    out: list[str] = []
    quote = ""
    i, n = 0, len(text)
    while i < n:
        placeholder = next((p for p in literals if text.startswith(p, i)), None)
        if placeholder is not None:
            out.append(_escaped(literals[placeholder], quote))
            i += len(placeholder)
            continue
        ch = text[i]
        if ch == "\\" and quote != "'" and i + 1 < n:
            out.append(text[i:i + 2])
            i += 2
            continue
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in _QUOTES:
            quote = ch
        out.append(ch)
        i += 1
    return "".join(out)


def split_command_checked(text: str) -> tuple[list[str], bool]:
    """Like ``split_command`` but also reports an unterminated quote.

    llama-swap silently runs such a command (the open quote swallows the rest of the line),
    so the loader keeps the same argv and only warns.
    """
    args, open_quote = _posix_split(_join_continuations(text))
    if not args:
        raise ValueError("empty command")
    return args, open_quote


def split_command(text: str) -> list[str]:
    """The argv for a config command string; ``ValueError("empty command")`` if nothing is left.

    Steps, as llama-swap's: drop ``#`` comment lines, turn a trailing ``\\`` into a space,
    then POSIX-split with newlines as blanks. No shell: pipes, ``&&`` and ``$VAR`` stay literal.
    A ``# comment`` after an argument on the same line is not stripped.
    """
    return split_command_checked(text)[0]
