"""Cron expressions in a time zone: validated once, for every schedule (an ingestion's runs,
a scheduled refresh). The schedules themselves live above the domain (`refresh.schedules`);
what a valid expression is belongs here, so the ingestion's API can check it too."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import islice, pairwise
from zoneinfo import ZoneInfo, available_timezones

from cronsim import CronSim, CronSimError
from django.conf import settings

from .errors import AutoloaderError

# How many following slots are checked against the minimum interval.
INTERVAL_CHECKED_SLOTS = 500


class ScheduleInvalidError(AutoloaderError):
    """The schedule's cron expression, time zone or action is not valid."""

    error_code = "VALIDATION_ERROR"
    status_code = 400
    help = (
        "Use five cron fields (minute hour day-of-month month day-of-week), e.g. '0 2 * * *', "
        "and an IANA time zone, e.g. 'Europe/Berlin'."
    )

    def __init__(self, errors: dict[str, list[str]]):
        summary = " ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
        super().__init__(f"Invalid schedule. {summary}", errors=errors)
        self.errors = errors


@dataclass(frozen=True)
class Cron:
    """A validated cron expression in its time zone."""

    expression: str
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def following(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` slots strictly after `after`, in the schedule's time zone."""
        return list(islice(CronSim(self.expression, after.astimezone(self.zone)), count))

    def next_after(self, after: datetime) -> datetime:
        """The next slot strictly after `after`, in UTC."""
        return self.following(after, 1)[0].astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The latest slot at or before `moment`, in UTC (cron has minute resolution)."""
        start = moment.astimezone(self.zone).replace(microsecond=0) + timedelta(seconds=1)
        return next(CronSim(self.expression, start, reverse=True)).astimezone(UTC)

    def describe(self) -> str:
        try:
            return CronSim(self.expression, datetime.now(self.zone)).explain()
        except Exception:  # explain() does not cover every expression; it is only a label
            return self.expression


@cache
def time_zones() -> frozenset[str]:
    """The IANA time zone names a schedule may use (not the machine's own `localtime`)."""
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def cron_parse(*, cron: str, timezone: str) -> Cron:
    """Validate `cron` in `timezone`.

    Raises:
        ScheduleInvalidError: not five valid fields, an unknown time zone, or firing more
            often than AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS.
    """
    errors: dict[str, list[str]] = {}
    expression = " ".join(str(cron).split())
    if timezone not in time_zones():
        errors["timezone"] = [f"{timezone!r} is not an IANA time zone, e.g. 'Europe/Berlin'."]
    if len(expression.split(" ")) != 5:
        errors["cron"] = [
            "Use five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *'."
        ]
    else:
        try:
            CronSim(expression, datetime.now(UTC))
        except CronSimError as exc:
            errors["cron"] = [f"{expression!r} is not a valid cron expression: {exc}."]
    if errors:
        raise ScheduleInvalidError(errors)
    parsed = Cron(expression=expression, timezone=timezone)
    minimum = settings.AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS
    slots = parsed.following(datetime.now(UTC), INTERVAL_CHECKED_SLOTS)
    shortest = min(
        ((later - earlier).total_seconds() for earlier, later in pairwise(slots)),
        default=None,
    )
    if shortest is not None and shortest < minimum:
        raise ScheduleInvalidError(
            {
                "cron": [
                    f"{expression!r} fires every {shortest / 60:g} minutes at times; schedules "
                    f"fire at most every {minimum / 60:g} minutes."
                ]
            }
        )
    return parsed
