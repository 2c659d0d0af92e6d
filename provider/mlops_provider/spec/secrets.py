"""What counts as a secret in a spec: one definition for lint and for the DAG docs.

Lint rejects a secret-looking key with a literal value (:func:`is_secret_key`) and a URL with a password
in it; the DAG docs, which show the spec's text, hide the value of every secret-looking key
(:func:`redact`) whatever it is, templated or not.
"""

from __future__ import annotations

import functools
import itertools
import re

_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "credential", "credentials"}
)
_SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("auth", "key")})
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
#: ``scheme://user:password@host``
URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)([^/\s@]+)(@)")
#: every secret key contains one of these (lower-cased); most specs contain none, and a substring test
#: is far cheaper than splitting every key of the text into words
_CHEAP_WORDS = ("password", "passwd", "pwd", "passphrase", "secret", "token", "key", "credential")
_KEY_LINE = re.compile(r"^(\s*(?:-\s+)?)([^\s:#'\"{][^:#]*?|'[^']*'|\"[^\"]*\")(\s*:[ \t]+)(\S.*)$")
#: ``key: value`` inside a flow mapping (``params: {api_token: x, n: 3}``)
_FLOW_PAIR = re.compile(r"([{,]\s*)([\w.-]+|'[^']*'|\"[^\"]*\")(\s*:\s*)('[^']*'|\"[^\"]*\"|[^,}]+)")


@functools.lru_cache(maxsize=4096)  # called for every key of every spec at parse time; keys repeat
def is_secret_key(key: str) -> bool:
    """``db_password``, ``apiKey``, ``AWS_SECRET_ACCESS_KEY``, ``auth_key``, ``passphrase``: yes.
    ``max_tokens``, ``keys``, ``monkey``: no."""
    words = [w.lower() for w in _WORDS.findall(key)]
    return any(w in _SECRET_WORDS for w in words) or any(
        pair in _SECRET_PAIRS for pair in itertools.pairwise(words)
    )


def _hide_flow_pair(match: re.Match[str]) -> str:
    if not is_secret_key(match.group(2).strip("'\"")):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{match.group(3)}'***'"


def redact(text: str) -> str:
    """The YAML text with the value of every secret-looking key, and every URL password, as ``'***'``."""
    lowered = text.lower()
    if not any(word in lowered for word in _CHEAP_WORDS) and "://" not in text:
        return text
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = _KEY_LINE.match(body)
        if match and is_secret_key(match.group(2).strip("'\"")) and not match.group(4).startswith("{"):
            body = f"{match.group(1)}{match.group(2)}{match.group(3)}'***'"
        else:
            if "{" in body:
                body = _FLOW_PAIR.sub(_hide_flow_pair, body)
            body = URL_PASSWORD.sub(r"\1***\3", body)
        lines.append(body + line[len(line.rstrip("\r\n")):])
    return "".join(lines)
