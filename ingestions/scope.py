"""The scope of a selective full refresh: which source files it reloads, and so which rows.

A scope is one of: a path prefix, a modified-time range (either bound or both), or an
explicit list of relative paths. It names files in two places, and a selective refresh
covers both: the source files that match (they are loaded again) and the history entries
that match (their rows are removed, and replaced by the reload if the file is still
there). Rows are found by their lineage column, `_source_file`.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from django.core.exceptions import ValidationError

from .formats import counted
from .models import Ingestion, ProcessedFile

MAX_SCOPE_FILES = 10_000
SCOPE_KEYS = ("prefix", "modified_after", "modified_before", "files")
# History rows are matched by path in chunks: SQLite bounds a statement's parameters.
PATH_CHUNK = 500


@dataclass(frozen=True)
class Scope:
    prefix: str = ""
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    files: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: dict | None) -> "Scope | None":
        """A scope from its JSON form (a request's, or one stored on a run); None: no scope.

        Raises:
            ValidationError: not exactly one kind of scope, or a bad path or time.
        """
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValidationError({"scope": ["An object: prefix, modified range or files."]})
        unknown = sorted(set(value) - set(SCOPE_KEYS))
        if unknown:
            raise ValidationError({"scope": [f"Unknown field(s): {', '.join(unknown)}."]})
        kinds = [
            bool(value.get("prefix")),
            bool(value.get("modified_after") or value.get("modified_before")),
            "files" in value,
        ]
        if sum(kinds) != 1:
            raise ValidationError(
                {
                    "scope": [
                        'Give exactly one of "prefix", "modified_after"/"modified_before" '
                        'or "files".'
                    ]
                }
            )
        if value.get("prefix"):
            return cls(prefix=_relative_path(value["prefix"], field="prefix", prefix=True))
        if "files" in value:
            files = value["files"]
            if not isinstance(files, list) or not files or len(files) > MAX_SCOPE_FILES:
                raise ValidationError(
                    {"scope": [f"files: a list of 1 to {MAX_SCOPE_FILES:,} relative paths."]}
                )
            paths = tuple(dict.fromkeys(_relative_path(path, field="files") for path in files))
            return cls(files=paths)
        after = _moment(value.get("modified_after"), "modified_after")
        before = _moment(value.get("modified_before"), "modified_before")
        if after and before and after >= before:
            raise ValidationError({"scope": ["modified_after must be before modified_before."]})
        return cls(modified_after=after, modified_before=before)

    def as_json(self) -> dict:
        if self.prefix:
            return {"prefix": self.prefix}
        if self.files:
            return {"files": list(self.files)}
        return {
            key: moment.isoformat()
            for key, moment in (
                ("modified_after", self.modified_after),
                ("modified_before", self.modified_before),
            )
            if moment is not None
        }

    def describe(self) -> str:
        if self.prefix:
            return f'files under "{self.prefix}"'
        if self.files:
            return counted(len(self.files), "named file")
        bounds = []
        if self.modified_after:
            # A range of whole days (refresh-range) starts just before midnight: "from" it.
            start = self.modified_after + timedelta(microseconds=1)
            if start.microsecond == 0 and self.modified_after.microsecond:
                bounds.append(f"from {start:%Y-%m-%d %H:%M:%S} UTC")
            else:
                bounds.append(f"after {self.modified_after:%Y-%m-%d %H:%M} UTC")
        if self.modified_before:
            bounds.append(f"before {self.modified_before:%Y-%m-%d %H:%M} UTC")
        return "files modified " + " and ".join(bounds)

    def matches(self, path: str, modified_at: datetime | None) -> bool:
        """Whether a file (of the source or of the history) is in the scope."""
        if self.prefix:
            return path.startswith(self.prefix)
        if self.files:
            return path in self._file_set
        if modified_at is None:
            return False
        if self.modified_after and modified_at <= self.modified_after:
            return False
        return not (self.modified_before and modified_at >= self.modified_before)

    def matches_listed(self, path: str, modified_ns: int | None) -> bool:
        """`matches` for a listing's entry (its modification time in nanoseconds)."""
        if self.prefix or self.files:
            return self.matches(path, None)
        moment = None if modified_ns is None else datetime.fromtimestamp(modified_ns / 1e9, UTC)
        return self.matches(path, moment)

    @cached_property
    def _file_set(self) -> frozenset[str]:
        return frozenset(self.files)


def scope_replacing(
    *, ingestion: Ingestion, scope: Scope, listed: set[str], matched: set[str]
) -> tuple[set[str], list[ProcessedFile]]:
    """The files whose rows a selective refresh replaces, and their history entries.

    Those are the source files in the scope (`matched`, reloaded) and the history's files
    in the scope that are no longer in the source (`listed` is the whole listing): their
    rows are removed. A file still in the source but out of the scope now (modified since
    it loaded, for a time range) keeps its rows: a scope never removes what it does not
    reload, unless the file is gone.
    """
    entries = [
        entry
        for entry in scoped_history(ingestion=ingestion, scope=scope)
        if entry.path in matched or entry.path not in listed
    ]
    return matched | {entry.path for entry in entries}, entries


def scoped_history(*, ingestion: Ingestion, scope: Scope) -> list[ProcessedFile]:
    """The history entries in the scope (path, rows, run), in path order.

    One indexed range read for a prefix; chunks of paths for a list; the modified range is
    a filter on the entries' recorded modification time.
    """
    entries = ProcessedFile.objects.filter(ingestion=ingestion).only(
        "path", "rows", "size_bytes", "modified_at", "run_id"
    )
    if scope.prefix:
        return list(entries.filter(path__startswith=scope.prefix).order_by("path"))
    if scope.files:
        found: list[ProcessedFile] = []
        for start in range(0, len(scope.files), PATH_CHUNK):
            found.extend(entries.filter(path__in=scope.files[start : start + PATH_CHUNK]))
        return sorted(found, key=lambda entry: entry.path)
    if scope.modified_after:
        entries = entries.filter(modified_at__gt=scope.modified_after)
    if scope.modified_before:
        entries = entries.filter(modified_at__lt=scope.modified_before)
    return list(entries.order_by("path"))


def _relative_path(value, *, field: str, prefix: bool = False) -> str:
    if not isinstance(value, str) or not value or len(value) > 1024 or "\x00" in value:
        raise ValidationError({"scope": [f"{field}: a relative path of 1 to 1024 characters."]})
    parts = value.split("/")
    if value.startswith("/") or "://" in value or ".." in parts or "\\" in value:
        raise ValidationError(
            {"scope": [f"{field}: {value!r} must be relative to the ingestion's source."]}
        )
    if not prefix and (value.endswith("/") or "" in parts):
        raise ValidationError({"scope": [f"files: {value!r} is not a file path."]})
    return value


def _moment(value, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError({"scope": [f"{field}: an ISO-8601 date and time."]}) from None
    if moment.tzinfo is None:
        raise ValidationError({"scope": [f"{field}: give a time zone (e.g. Z or +02:00)."]})
    # Stored and compared in UTC. 0001-01-01T00:00+14:00 is still year 0 in UTC (and
    # 9999-12-31T23:59-14:00 year 10000): no datetime, no database column holds it.
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValidationError(
            {
                "scope": [
                    f"{field}: {moment.isoformat()} is outside the times that can be stored: "
                    "in UTC it must fall between 0001-01-01T00:00:00Z and "
                    "9999-12-31T23:59:59Z."
                ]
            }
        ) from None
