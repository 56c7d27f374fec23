"""The API's JSON parser: DRF's, refusing JSON nested deeper than any request of ours needs.

Python's json module parses nesting by recursion: 100,000 levels raise RecursionError (a
500), and the depth it can survive depends on the recursion limit and the thread's stack.
The depth is therefore measured on the text, without recursion, before anything is parsed.
"""

import io
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as _DRFJSONParser

MAX_DEPTH = 64
# A JSON string (escapes included), whose brackets are text, not structure. An unterminated
# one runs to the end: the pattern matches at every quote, so a scan never restarts inside a
# string (which would make `"\"\"\"...` quadratic).
JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
SAME_BRACKETS = str.maketrans("{}", "[]")


def nesting_exceeds(text: str, max_depth: int) -> bool:
    """Whether the arrays and objects of the JSON `text` nest deeper than `max_depth`.

    Each pass removes the innermost bracket pairs, one level; a pair left after
    `max_depth` passes lies deeper.
    """
    brackets = NOT_A_BRACKET.sub("", JSON_STRING.sub("", text)).translate(SAME_BRACKETS)
    for _ in range(max_depth):
        inner_removed = brackets.replace("[]", "")
        if inner_removed == brackets:
            break
        brackets = inner_removed
    else:
        if "[]" in brackets:
            return True
    # What is left is unbalanced ("]]][[["), which the parser refuses; its unclosed
    # openers still nest, and the parser would recurse into each before failing.
    return brackets.count("[") > max_depth


class JSONParser(_DRFJSONParser):
    """DRF's JSON parser, with a bound on nesting (MAX_DEPTH levels)."""

    max_depth = MAX_DEPTH

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read()
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)  # bytes.decode refuses bytes-to-bytes codecs (bz2)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if nesting_exceeds(text, self.max_depth):
            raise ParseError(f"JSON nested deeper than {self.max_depth} levels.")
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:  # cannot happen within MAX_DEPTH; kept a 400 if it does
            raise ParseError(f"JSON nested deeper than {self.max_depth} levels.") from None
