"""Candidate values in text, normalised so that the forms an attacker varies compare equal: the one extraction that
the provenance rule applies to what the agent read and to what it then sent, and the policy to its own lists.

A value is a (kind, normal form) pair, written `kind:normal`:
- `email`: lower-cased, the domain in its ASCII (IDNA/punycode) form;
- `url`: scheme, ASCII host, path and query, percent-decoded, lower-cased; its host is also a `host` value;
- `host`: a domain name that stands alone or in a URL, ASCII form;
- `iban`: upper-case, spaces removed;
- `number`: six or more digits (phone, account, card numbers), separators removed; dates and times are not values;
- `ident`: a token of letters and digits with at least one of each (customer ids, wallet addresses, file ids),
  a slug (`acme-logistics`, `vendor_payouts`) or a file name, lower-cased;
- `path`: a file path (`src/app.py`, `/root/.env`, `~/.ssh/id_rsa`), as written;
- `env`: an environment variable a command reads (`$SECRET_API_KEY`, `${HOME}`);
- `text`: a quoted string, a JSON string leaf or a whole argument value, lower-cased with spaces collapsed.

Text is percent-decoded (twice, for double encoding) before extraction, so an address inside a URL's query is
found too. `pieces` are the runs of letters and digits with a digit in them: a value split across two outputs
(an IBAN in halves) is found from its pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import idna
from publicsuffixlist import PublicSuffixList

MAX_TEXT_VALUE = 200  # longer strings are free text: only their tokens are values
MAX_SCANNED = 65_536  # characters of one text that are scanned (a result is capped below this by the contract)
MIN_PIECE = 4

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@((?:[^\W_](?:[\w\-]*[^\W_])?\.)+[^\W\d_]{2,63})")
_URL = re.compile(r"(?i)\b(?:https?|ftp)://[^\s<>\"'`()\[\]{}|\\^]+")
_HOST = re.compile(r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,24}|xn--[a-z0-9\-]{2,59})")
_IBAN_WORD = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")
_IBAN_HEAD = re.compile(r"[A-Z]{2}\d{2}")
_IBAN_GROUP = re.compile(r"[A-Z0-9]{1,4}")
_NUMBER = re.compile(r"\+?\(?\d(?:[\-./()]{0,2}\d){5,}")
_DIGIT_GROUP = re.compile(r"\+?\(?\d{1,5}(?:[\-./]\d{1,5})*\)?-?")
_DATE_OR_TIME = re.compile(r"^\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}$|^\d{1,2}[\-/.]\d{1,2}[\-/.]\d{2,4}$|^\d{1,2}:\d{2}")
_IDENT = re.compile(r"(?=[\w\-]*\d)(?=[\w\-]*[A-Za-z])[A-Za-z0-9][\w\-]{4,}[A-Za-z0-9]")
_SLUG = re.compile(r"[A-Za-z]{2,}(?:[\-_][A-Za-z0-9]{2,})+")  # acme-logistics, vendor_payouts: names, not prose
_FILE = re.compile(r"[\w\-]+\.[A-Za-z][A-Za-z0-9]{0,5}")
_PATH = re.compile(r"(?:~|\.{1,2})?/?(?:[\w.\-]+/)+[\w.\-]*\w|~?/[\w.\-]*\w")  # src/app.py, /root/.env, ~/.ssh/id
_ENV = re.compile(r"\$\{?([A-Za-z_]\w*)")
_QUOTED = re.compile(r"\"([^\"\n]{3,200})\"|'([^'\n]{3,200})'|`([^`\n]{3,200})`|“([^”\n]{3,200})”")
_PIECE = re.compile(r"[A-Za-z0-9]*\d[A-Za-z0-9]*")
_SPACES = re.compile(r"\s+")
_DIGIT = re.compile(r"\d")
_FILE_EXTENSIONS = frozenset({"txt", "pdf", "csv", "doc", "docx", "xls", "xlsx", "json", "md", "py", "js", "ts",
                               "yaml", "yml", "png", "jpg", "jpeg", "gif", "zip", "log", "html", "xml", "sh",
                               "toml", "cfg", "ini", "pptx", "ppt", "tar", "gz", "eml", "ics"})


_SUFFIXES = PublicSuffixList(accept_unknown=False)
# Names reserved for documentation, tests and private networks (RFC 2606, 6761, 6762), used as real hosts inside
# organisations: not in the Public Suffix List, still hosts.
_PRIVATE_TLDS = frozenset({"example", "test", "invalid", "localhost", "local", "internal", "corp", "home", "lan",
                           "intranet", "private"})


@lru_cache(maxsize=8192)
def is_host(name: str) -> bool:
    """A domain whose top level is a real one (the Public Suffix List) or a private-use name: `evil.com` and
    `vault.corp` are hosts, `text.title` and `result.replace` (code) are not."""
    return name.rpartition(".")[2] in _PRIVATE_TLDS or _SUFFIXES.publicsuffix(name) is not None


@lru_cache(maxsize=8192)
def ascii_domain(domain: str) -> str:
    """A domain in its ASCII form (IDNA 2008 + UTS 46), lower-cased; the text itself when it is not one."""
    domain = domain.strip(".").lower()
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def _decoded(text: str) -> str:
    if "%" not in text:
        return text
    once = unquote(text)
    return unquote(once) if "%" in once else once


def normal_text(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


def _email(match: re.Match[str]) -> str:
    local, _, domain = match.group(0).rpartition("@")
    return f"email:{local.lower()}@{ascii_domain(domain)}"


def _url(raw: str) -> Iterator[str]:
    raw = raw.rstrip(".,;:!?")
    scheme, _, rest = raw.partition("://")
    authority, slash, tail = rest.partition("/")
    host = authority.rpartition("@")[2].partition(":")[0]
    if not host:
        return
    name = ascii_domain(host)
    yield f"host:{name}"
    tail = tail.rstrip("/")
    yield f"url:{scheme.lower()}://{name}{slash if tail else ''}{tail.lower()}"


def _is_path(word: str) -> bool:
    """Rooted (`/`, `~`, `.`), two levels deep, or ending in a file name: `and/or` and `1/2` are prose."""
    return word[0] in "/~." or word.count("/") >= 2 or (
        "." in (last := word.rpartition("/")[2]) and last.rpartition(".")[2].isalpha())


_STRIP = "\"'`()[]{}<>,;:!?*|"
_TRAIL = ".-"


def _word(raw: str) -> str:
    return raw.strip(_STRIP).rstrip(_TRAIL)


def _classify(word: str, found: set[str], pieces: set[str] | None) -> None:
    """The typed values of one word (no whitespace in it), and its pieces into `pieces`."""
    if "@" in word:
        m = _EMAIL.search(word)
        if m is not None:
            found.add(_email(m))
    if "://" in word:
        m = _URL.search(word)
        if m is not None:
            found.update(_url(m.group(0)))
            return
    digits = _DIGIT.search(word) is not None
    if "$" in word:
        for m in _ENV.finditer(word):
            found.add(f"env:{m.group(1)}")
    if "/" in word and _PATH.fullmatch(word) and _is_path(word):
        found.add(f"path:{word.removeprefix('./')}")
    elif "." in word and "@" not in word:
        host = word.lower()
        if _HOST.fullmatch(host) and host.rpartition(".")[2] not in _FILE_EXTENSIONS \
                and is_host(ascii_domain(host)):
            found.add(f"host:{ascii_domain(host.removeprefix('www.'))}")
        elif _FILE.fullmatch(word) and word.rpartition(".")[2].lower() in _FILE_EXTENSIONS:
            found.add(f"ident:{word.lower()}")
    if not digits:
        if _SLUG.fullmatch(word):
            found.add("ident:" + word.lower())
        return
    if pieces is not None:
        for m in _PIECE.finditer(word):
            if len(m.group(0)) >= 2:
                pieces.add(m.group(0).upper())
    if _NUMBER.fullmatch(word) and not _DATE_OR_TIME.match(word):
        found.add("number:" + "".join(c for c in word if c.isdigit()))
    elif _IBAN_WORD.fullmatch(word):
        found.add("iban:" + word)
    if _IDENT.fullmatch(word):
        found.add("ident:" + word.lower())


def _group(every: list[str], i: int, word: str, found: set[str]) -> int:
    """A value written in groups across spaces from word i on: an IBAN (`DE89 3704 0044 …`) or a number (`+1 555 123
    4567`). Returns the index of the first word after it (i + 1 when there is none)."""
    n = len(every)
    if _IBAN_HEAD.fullmatch(word):
        j, run = i + 1, word
        while j < n and len(run) < 34 and _IBAN_GROUP.fullmatch(nxt := _word(every[j])):
            run += nxt
            j += 1
        if j - i >= 3 and len(run) >= 15:
            found.add("iban:" + run)
            return j
    if (word[0].isdigit() or word[0] in "+(") and _DIGIT_GROUP.fullmatch(word):
        j, run = i + 1, word
        while j < n and _DIGIT_GROUP.fullmatch(nxt := _word(every[j])):
            run += nxt
            j += 1
        number = "".join(c for c in run if c.isdigit())
        if j - i >= 2 and len(number) >= 6:
            found.add("number:" + number)
        return j
    return i + 1


def tokens(text: str, pieces: set[str] | None = None) -> set[str]:
    """Every typed value in `text` (not `text` values: see `whole` and `quoted`), and into `pieces` the runs of
    letters and digits with a digit in them (upper-cased), of which a split value is put together. Word by word:
    a regular expression scanned over the whole text costs ten times more in CPython."""
    text = _decoded(text[:MAX_SCANNED])
    found: set[str] = set()
    every = text.split()
    grouped = _DIGIT.search(text) is not None
    after = 0  # the first word not yet part of a grouped value
    # Plain words, and plain words before a comma or full stop, hold no value: skipped at C speed.
    for i in [i for i, w in enumerate(every) if not w.isalpha() and not w[:-1].isalpha()]:
        word = _word(every[i])
        if not word:
            continue
        _classify(word, found, pieces)
        if grouped and i >= after and len(word) <= 12 and (word[0].isdigit() or word[0] in "+(" or (
                len(word) == 4 and word[:2].isupper())):
            after = _group(every, i, word, found)
    return found


def quoted(text: str) -> set[str]:
    """The quoted strings of `text` as `text` values."""
    found = set()
    for m in _QUOTED.finditer(text[:MAX_SCANNED]):
        inner = next(g for g in m.groups() if g is not None)
        found.add("text:" + normal_text(inner))
    return found


def whole(value: str) -> str | None:
    """A short string as one `text` value; None for free text."""
    if len(value) > 4 * MAX_TEXT_VALUE:  # free text however its spaces collapse: not worth normalising
        return None
    norm = normal_text(value)
    return f"text:{norm}" if 2 < len(norm) <= MAX_TEXT_VALUE else None


def leaves(value: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """(dotted path, string) for each string leaf of a JSON value, integers of six digits or more as strings;
    depth-bounded."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, bool) or depth > 32:
        return
    elif isinstance(value, int):
        if abs(value) >= 100_000:
            yield path, str(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}[{i}]", depth + 1)


def read_values(content: Any, pieces: set[str] | None = None) -> set[str]:
    """What a result or request offers: its typed tokens, quoted strings and short string leaves (and the pieces of
    split values into `pieces`, when given)."""
    found: set[str] = set()
    if isinstance(content, str):
        found |= tokens(content, pieces)
        if "\"" in content or "'" in content or "`" in content or "“" in content:
            found |= quoted(content)
        short = whole(content)
        if short is not None:
            found.add(short)
        return found
    for _, leaf in leaves(content):
        found |= tokens(leaf, pieces)
        short = whole(leaf)
        if short is not None:
            found.add(short)
    return found


def split_value(value: str) -> str | None:
    """The letters and digits of a typed value that could have been put together from pieces (long enough, with
    a digit), upper-cased; None otherwise."""
    kind, _, normal = value.partition(":")
    if kind not in ("iban", "number", "ident"):
        return None
    run = "".join(c for c in normal if c.isalnum()).upper()
    return run if len(run) >= 2 * MIN_PIECE and any(c.isdigit() for c in run) else None
