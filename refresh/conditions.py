"""The condition language of a conditional refresh (`refresh-if`, a schedule's `condition`).

A condition is a small boolean expression over named facts of an ingestion, measured on the
listing its preview makes (`refresh.conditional.plan_facts`):

    changed_files > 0 or (new_files >= 100 and hours_since_last_refresh > 20)

- comparisons: `==`, `!=`, `<`, `<=`, `>`, `>=` between a fact and a number (or two facts,
  or two numbers); one comparison per pair of operands (no `a < b < c`);
- `not` binds tightest, then `and`, then `or`; parentheses group;
- numbers: integers or decimals (`0`, `2.5`, `-1`), at most 20 digits;
- names: the facts of `FACTS` only, in lower case; `and`, `or`, `not` are keywords.

It is read by a hand-written tokenizer and recursive-descent parser, never evaluated as
Python: nothing in a condition can call, import, index or reach an attribute. Conditions are
bounded (`MAX_CONDITION_LENGTH` characters, `MAX_CONDITION_DEPTH` nested groups and `not`s),
and every refusal is a `ConditionInvalidError` (400 INVALID_CONDITION) that lists the facts.
"""

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from ingestions.errors import AutoloaderError

MAX_CONDITION_LENGTH = 500
MAX_CONDITION_DEPTH = 20
MAX_NUMBER_DIGITS = 20

# The facts, in the order they are shown, with what each one counts.
FACTS: dict[str, str] = {
    "file_count": "files in the source listing (quarantined ones left out)",
    "new_files": "files in the source that the history does not know",
    "changed_files": "files in the history whose size or modification time changed since "
    "they loaded",
    "files_to_process": "files the operation would load (its preview's files_to_process)",
    "bytes_to_process": "bytes the operation would load",
    "failed_files": "files whose last load failed and that have not loaded since "
    "(quarantined ones included)",
    "hours_since_last_refresh": "hours since the last full refresh or fresh start started "
    "(since the ingestion was created if there was none)",
}
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
KEYWORDS = ("and", "or", "not")

# The OpenAPI pattern of a condition: exactly the conditions without parentheses (a regular
# language; nesting is not), with single spaces around keywords. The server reads more:
# parentheses, other spacing.
_NUMBER = rf"-?[0-9]{{1,{MAX_NUMBER_DIGITS // 2}}}(\.[0-9]{{1,{MAX_NUMBER_DIGITS // 2}}})?"
_OPERAND = "(" + "|".join(FACTS) + f"|{_NUMBER})"
_COMPARISON = rf"(not ){{0,3}}{_OPERAND} ?(==|!=|<=|>=|<|>) ?{_OPERAND}"
# At most 7 comparisons: the longest such condition fits in MAX_CONDITION_LENGTH.
_CONDITION = rf"{_COMPARISON}( (and|or) {_COMPARISON}){{0,6}}"
CONDITION_PATTERN = rf"^{_CONDITION}$"
OPTIONAL_CONDITION_PATTERN = rf"^({_CONDITION})?$"  # "" clears a schedule's condition

# ASCII only: `\d` and `\s` would take other scripts' digits and spaces too.
_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
    | (?P<number>[0-9]+(?:\.[0-9]+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<compare>==|!=|<=|>=|<|>)
    | (?P<paren>[()])
    | (?P<minus>-)
    """,
    re.VERBOSE,
)


class ConditionInvalidError(AutoloaderError):
    """The condition is not an expression of the condition language over known facts."""

    error_code = "INVALID_CONDITION"
    status_code = 400
    help = (
        "Compare facts with numbers (== != < <= > >=), combine with and, or, not and "
        "parentheses, e.g. 'changed_files > 0 or new_files >= 100'. Facts: "
        + ", ".join(FACTS)
        + "."
    )

    def __init__(self, message: str, *, position: int | None = None):
        where = f" (at character {position + 1})" if position is not None else ""
        super().__init__(
            f"Invalid condition{where}: {message} Known facts: {', '.join(FACTS)}.",
            facts=dict(FACTS),
            **({"position": position} if position is not None else {}),
        )


@dataclass(frozen=True)
class _Token:
    kind: str  # number, name, keyword, compare, paren, end
    text: str
    position: int


@dataclass(frozen=True)
class Comparison:
    left: str | float
    op: str
    right: str | float

    def evaluate(self, facts: dict[str, float]) -> bool:
        return COMPARISONS[self.op](_value(self.left, facts), _value(self.right, facts))

    def text(self) -> str:
        return f"{_operand_text(self.left)} {self.op} {_operand_text(self.right)}"


@dataclass(frozen=True)
class Not:
    item: "Node"

    def evaluate(self, facts: dict[str, float]) -> bool:
        return not self.item.evaluate(facts)


@dataclass(frozen=True)
class All:
    items: tuple["Node", ...]

    def evaluate(self, facts: dict[str, float]) -> bool:
        return all(item.evaluate(facts) for item in self.items)


@dataclass(frozen=True)
class Any:
    items: tuple["Node", ...]

    def evaluate(self, facts: dict[str, float]) -> bool:
        return any(item.evaluate(facts) for item in self.items)


Node = Comparison | Not | All | Any


@dataclass(frozen=True)
class Condition:
    """A parsed condition: its text as given (whitespace normalized) and its tree."""

    text: str
    tree: Node

    @property
    def facts_used(self) -> list[str]:
        """The facts the condition names, in the order of `FACTS`."""
        used = set()
        pending = [self.tree]
        while pending:
            node = pending.pop()
            if isinstance(node, Comparison):
                used.update(value for value in (node.left, node.right) if isinstance(value, str))
            elif isinstance(node, Not):
                pending.append(node.item)
            else:
                pending.extend(node.items)
        return [name for name in FACTS if name in used]

    def evaluate(self, facts: dict[str, float]) -> bool:
        return self.tree.evaluate(facts)

    def explain(self, facts: dict[str, float]) -> list[dict]:
        """Each comparison with the values it compared and its result, in reading order."""
        found: list[Comparison] = []

        def walk(node) -> None:
            if isinstance(node, Comparison):
                found.append(node)
            elif isinstance(node, Not):
                walk(node.item)
            else:
                for item in node.items:
                    walk(item)

        walk(self.tree)
        return [
            {
                "comparison": comparison.text(),
                "left": _value(comparison.left, facts),
                "right": _value(comparison.right, facts),
                "result": comparison.evaluate(facts),
            }
            for comparison in found
        ]


def condition_parse(text) -> Condition:
    """Parse a condition.

    Raises:
        ConditionInvalidError: not a string, empty, too long, too deep, an unknown name, a
            character or a construct the language does not have.
    """
    if not isinstance(text, str):
        raise ConditionInvalidError("a condition is a string, e.g. 'changed_files > 0'.")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ConditionInvalidError(f"at most {MAX_CONDITION_LENGTH} characters.")
    if not text.strip():
        raise ConditionInvalidError("it is empty: e.g. 'changed_files > 0'.")
    parser = _Parser(_tokens(text))
    tree = parser.disjunction(depth=0)
    parser.expect_end()
    return Condition(text=" ".join(text.split()), tree=tree)


def condition_normalized(text: str | None) -> str:
    """The stored form of an optional condition: "" for none ("" or None given), else its
    text once parsed (whitespace alone is refused as empty).

    Raises:
        ConditionInvalidError: as `condition_parse`.
    """
    if text is None or text == "":
        return ""
    return condition_parse(text).text


# --- reading -----------------------------------------------------------------------------


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConditionInvalidError(
                f"{text[position]!r} is not part of the language (no strings, calls, "
                "attributes or indexing: facts, numbers, comparisons, and, or, not, "
                "parentheses).",
                position=position,
            )
        kind, value = match.lastgroup, match.group()
        if kind == "number" and len(value.replace(".", "")) > MAX_NUMBER_DIGITS:
            raise ConditionInvalidError(
                f"numbers have at most {MAX_NUMBER_DIGITS} digits.", position=position
            )
        if kind == "name":
            if value in KEYWORDS:
                kind = "keyword"
            elif value.lower() in KEYWORDS:
                raise ConditionInvalidError(
                    f"write {value.lower()!r} in lower case.", position=position
                )
            elif value not in FACTS:
                raise ConditionInvalidError(f"{value!r} is not a fact.", position=position)
        # A character the pattern reads but the language has not: "=" alone, "!" alone.
        if kind != "space":
            tokens.append(_Token(kind=kind, text=value, position=position))
        position = match.end()
    tokens.append(_Token(kind="end", text="", position=len(text)))
    return tokens


class _Parser:
    """Recursive descent over the tokens:

    disjunction := conjunction ("or" conjunction)*
    conjunction := negation ("and" negation)*
    negation    := "not" negation | "(" disjunction ")" | comparison
    comparison  := operand COMPARE operand
    operand     := fact | ["-"] number
    """

    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.current
        self.index += 1
        return token

    def at_keyword(self, word: str) -> bool:
        return self.current.kind == "keyword" and self.current.text == word

    def disjunction(self, *, depth: int) -> Node:
        items = [self.conjunction(depth=depth)]
        while self.at_keyword("or"):
            self.take()
            items.append(self.conjunction(depth=depth))
        return items[0] if len(items) == 1 else Any(tuple(items))

    def conjunction(self, *, depth: int) -> Node:
        items = [self.negation(depth=depth)]
        while self.at_keyword("and"):
            self.take()
            items.append(self.negation(depth=depth))
        return items[0] if len(items) == 1 else All(tuple(items))

    def negation(self, *, depth: int) -> Node:
        if depth >= MAX_CONDITION_DEPTH:
            raise ConditionInvalidError(
                f"at most {MAX_CONDITION_DEPTH} nested parentheses and nots.",
                position=self.current.position,
            )
        if self.at_keyword("not"):
            self.take()
            return Not(self.negation(depth=depth + 1))
        if self.current.kind == "paren" and self.current.text == "(":
            opening = self.take()
            inner = self.disjunction(depth=depth + 1)
            if not (self.current.kind == "paren" and self.current.text == ")"):
                raise ConditionInvalidError(
                    f"the parenthesis opened at character {opening.position + 1} is not closed.",
                    position=self.current.position,
                )
            self.take()
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        left = self.operand()
        if self.current.kind != "compare":
            raise ConditionInvalidError(
                f"expected a comparison (== != < <= > >=) after {_operand_text(left)}, "
                f"found {self._found()}.",
                position=self.current.position,
            )
        op = self.take().text
        right = self.operand()
        if self.current.kind == "compare":
            raise ConditionInvalidError(
                "one comparison at a time: write 'a < b and b < c'.",
                position=self.current.position,
            )
        return Comparison(left=left, op=op, right=right)

    def operand(self) -> str | float:
        token = self.current
        if token.kind == "name":
            self.take()
            return token.text
        negative = token.kind == "minus"
        if negative:
            self.take()
            token = self.current
        if token.kind == "number":
            self.take()
            value = float(token.text) if "." in token.text else int(token.text)
            return -value if negative else value
        raise ConditionInvalidError(
            f"expected a fact or a number, found {self._found()}.", position=token.position
        )

    def expect_end(self) -> None:
        if self.current.kind != "end":
            raise ConditionInvalidError(
                f"unexpected {self._found()}: join comparisons with and / or.",
                position=self.current.position,
            )

    def _found(self) -> str:
        token = self.current
        return "the end" if token.kind == "end" else repr(token.text)


def _value(operand: str | float, facts: dict[str, float]) -> float:
    return facts[operand] if isinstance(operand, str) else operand


def _operand_text(operand: str | float) -> str:
    return operand if isinstance(operand, str) else f"{operand:g}"
