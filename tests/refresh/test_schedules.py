"""Schedules: validation, firing once per slot (racing workers too), catch-up, pause,
scheduled refreshes under the plan rule, permissions, the API."""

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test import Client
from django.urls import reverse

from console.management.commands.autoloader_worker import Command
from ingestions import hooks
from ingestions.cron import ScheduleInvalidError, cron_parse
from ingestions.memberships import membership_remove, membership_set
from ingestions.models import Role, Run, RunStatus, RunTrigger
from refresh import firing as firing_module
from refresh.firing import schedules_fire_due
from refresh.models import (
    FiringOutcome,
    OperationStatus,
    RefreshOperation,
    Schedule,
    ScheduleAction,
    ScheduleFiring,
)
from refresh.preview import refresh_preview
from refresh.schedules import schedule_approve, schedule_pause, schedule_resume, schedule_set

from ..factories import IngestionFactory, TenantFactory
from ..helpers import drain_queue, open_table, write_csv_files

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def audit_actions(ingestion) -> list[str]:
    """The schedule entries in the ingestion's audit trail, oldest first."""
    return list(
        LogEntry.objects.filter(
            additional_data__ingestion_id=ingestion.public_id,
            additional_data__operation__startswith="schedule_",
        )
        .order_by("id")
        .values_list("additional_data__operation", flat=True)
    )


@pytest.fixture
def admin(member):
    return member(Role.ADMIN)


# --- cron and time zones -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "timezone", "field", "words"),
    [
        ("every day", "UTC", "cron", "five fields"),
        ("61 * * * *", "UTC", "cron", "not a valid cron expression"),
        ("0 0 2 * * *", "UTC", "cron", "five fields"),  # seconds are not cron's
        ("0 2 * * *", "Mars/Olympus_Mons", "timezone", "not an IANA time zone"),
        ("0 2 * * *", "../../etc/passwd", "timezone", "not an IANA time zone"),
        ("* * * * *", "UTC", "cron", "at most every 5 minutes"),
        ("0,1 2 * * *", "UTC", "cron", "at most every 5 minutes"),  # short once a day
    ],
)
def test_an_invalid_or_too_frequent_schedule_is_refused_with_a_clear_message(
    cron, timezone, field, words
):
    with pytest.raises(ScheduleInvalidError) as refused:
        cron_parse(cron=cron, timezone=timezone)

    assert refused.value.error_code == "VALIDATION_ERROR"
    assert words in " ".join(refused.value.errors[field])


def test_the_minimum_interval_is_a_setting(settings):
    settings.AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS = 60
    assert cron_parse(cron="* * * * *", timezone="UTC").expression == "* * * * *"


def test_berlin_0230_fires_at_0300_on_the_spring_forward_day_and_once_in_autumn():
    cron = cron_parse(cron="30 2 * * *", timezone="Europe/Berlin")

    spring = cron.following(datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), 3)
    # 02:30 does not exist on 29 March: it fires at the first instant after the gap.
    assert [moment.isoformat() for moment in spring] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    autumn = cron.following(datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN), 2)
    # 02:30 happens twice on 25 October: it fires once, at the first one (summer time).
    assert [moment.isoformat() for moment in autumn] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


# --- the run schedule through the ingestion API ----------------------------------------------


@pytest.mark.django_db
def test_patch_sets_the_run_schedule_shows_next_fire_times_and_null_clears_it(admin, tenant):
    ingestion = IngestionFactory(tenant=tenant, public_id="sales")
    url = "/api/v1/ingestions/sales"

    response = admin.patch(
        url,
        {"schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "paused": False}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    schedule = response.json()["schedule"]
    assert schedule["cron"] == "0 2 * * *"
    assert schedule["timezone"] == "Europe/Berlin"
    assert schedule["paused"] is False
    assert schedule["action"] == "run"
    assert len(schedule["next_fire_times"]) == 3
    assert all(
        moment[11:19] == "02:00:00" and moment[-6:] in ("+01:00", "+02:00")
        for moment in schedule["next_fire_times"]
    )
    assert admin.get(url).json()["schedule"]["id"] == schedule["id"]
    listed = admin.get("/api/v1/ingestions").json()["results"]
    assert listed[0]["schedule"]["cron"] == "0 2 * * *"

    paused = admin.patch(url, {"schedule": {"paused": True}}, format="json").json()["schedule"]
    assert paused["paused"] is True and paused["next_fire_times"] == []
    assert paused["cron"] == "0 2 * * *"  # what is not given is kept

    cleared = admin.patch(url, {"schedule": None}, format="json")
    assert cleared.status_code == 200
    assert cleared.json()["schedule"] is None
    assert not Schedule.objects.filter(ingestion=ingestion).exists()
    assert audit_actions(ingestion) == ["schedule_set", "schedule_paused", "schedule_deleted"]


@pytest.mark.django_db
def test_an_invalid_schedule_is_a_400_and_changes_nothing_else(admin, tenant):
    IngestionFactory(tenant=tenant, public_id="sales", name="Sales")

    response = admin.patch(
        "/api/v1/ingestions/sales",
        {"name": "Renamed", "schedule": {"cron": "0 2 * * *", "timezone": "Moon/Base"}},
        format="json",
    )

    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert "not an IANA time zone" in body["detail"]
    assert body["errors"]["schedule"]["timezone"]
    assert admin.get("/api/v1/ingestions/sales").json()["name"] == "Sales"
    missing = admin.patch("/api/v1/ingestions/sales", {"schedule": {}}, format="json")
    assert missing.status_code == 400 and "cron" in missing.json()["errors"]


# --- firing ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_due_run_schedule_fires_once_per_slot_with_trigger_schedule(admin, tenant):
    ingestion = IngestionFactory(tenant=tenant)
    schedule = schedule_set(
        ingestion=ingestion, actor=admin.user, cron="0 * * * *", timezone="UTC", now=NOW
    )
    slot = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
    assert schedule.next_fire_at == slot

    assert schedules_fire_due(now=slot - timedelta(seconds=1)) == []
    firings = schedules_fire_due(now=slot + timedelta(seconds=20))
    assert schedules_fire_due(now=slot + timedelta(seconds=40)) == []  # fired already

    assert len(firings) == 1
    firing = firings[0]
    assert (firing.slot, firing.outcome, firing.skipped_slots) == (slot, "fired", 0)
    run = Run.objects.get(ingestion=ingestion)
    assert run.trigger == RunTrigger.SCHEDULE == "schedule"
    assert firing.run == run
    schedule.refresh_from_db()
    assert schedule.next_fire_at == slot + timedelta(hours=1)
    assert schedule.last_slot == slot
    assert schedule.last_firing == firing
    assert audit_actions(ingestion)[-1] == "schedule_fired"
    shown = admin.get(f"/api/v1/schedules/{schedule.public_id}").json()
    assert shown["last_firing"]["run_id"] == run.public_id


@pytest.mark.django_db
def test_missed_slots_catch_up_once_for_the_latest_and_count_the_skipped(admin, tenant):
    ingestion = IngestionFactory(tenant=tenant)
    schedule_set(ingestion=ingestion, actor=admin.user, cron="0 * * * *", now=NOW)

    # The worker was down from 12:00 to 18:30: slots 13:00 ... 18:00 were missed.
    firings = schedules_fire_due(now=datetime(2026, 6, 1, 18, 30, tzinfo=UTC))

    assert len(firings) == 1
    assert firings[0].slot == datetime(2026, 6, 1, 18, 0, tzinfo=UTC)
    assert firings[0].skipped_slots == 5
    assert Run.objects.filter(ingestion=ingestion).count() == 1
    assert Schedule.objects.get().next_fire_at == datetime(2026, 6, 1, 19, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_a_paused_schedule_does_not_fire_and_resuming_starts_from_now(admin, tenant):
    ingestion = IngestionFactory(tenant=tenant)
    schedule = schedule_set(ingestion=ingestion, actor=admin.user, cron="0 * * * *", now=NOW)
    schedule_pause(schedule=schedule, actor=admin.user)

    assert schedules_fire_due(now=NOW + timedelta(hours=5)) == []

    later = NOW + timedelta(hours=5, minutes=10)
    schedule = schedule_resume(schedule=schedule, actor=admin.user, now=later)
    assert schedule.next_fire_at == NOW + timedelta(hours=6)  # no catch-up of paused slots
    assert len(schedules_fire_due(now=NOW + timedelta(hours=6))) == 1
    assert audit_actions(ingestion)[:3] == ["schedule_set", "schedule_paused", "schedule_resumed"]


@pytest.mark.django_db
def test_a_firing_while_a_run_is_active_is_recorded_as_skipped(admin, tenant):
    ingestion = IngestionFactory(tenant=tenant)
    active = Run.objects.create(ingestion=ingestion, status=RunStatus.RUNNING)
    schedule_set(ingestion=ingestion, actor=admin.user, cron="0 * * * *", now=NOW)

    (firing,) = schedules_fire_due(now=NOW + timedelta(hours=1))

    assert firing.outcome == FiringOutcome.SKIPPED
    assert firing.reason == "RUN_IN_PROGRESS"
    assert list(Run.objects.filter(ingestion=ingestion)) == [active]


@pytest.mark.django_db(transaction=True)  # the reaper pass closes stale connections
def test_the_workers_reaper_pass_fires_due_schedules(admin, tenant):
    ingestion = IngestionFactory(tenant=tenant)
    schedule_set(ingestion=ingestion, actor=admin.user, cron="0 * * * *", now=NOW)  # due

    Command()._reap_once(hooks.periodic_jobs("recovery"))

    assert schedules_fire_due in hooks.periodic_jobs("recovery")
    assert Run.objects.get(ingestion=ingestion).trigger == "schedule"


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_fire_each_slot_exactly_once(admin, tenant):
    """Each worker thread has its own database connection; PostgreSQL lets them race for
    real (the CI's PostgreSQL pass), SQLite serializes them."""
    ingestion = IngestionFactory(tenant=tenant)
    schedule_set(ingestion=ingestion, actor=admin.user, cron="0 * * * *", now=NOW)
    workers = 4
    for hour in range(1, 4):
        now = NOW + timedelta(hours=hour, seconds=5)
        barrier = threading.Barrier(workers)
        fired: list[int] = []
        errors: list[BaseException] = []

        def worker(now=now, barrier=barrier, fired=fired, errors=errors):
            try:
                barrier.wait()
                fired.append(len(schedules_fire_due(now=now)))
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert sorted(fired) == [0] * (workers - 1) + [1]
        # The run of this slot ends before the next slot, as a real one would.
        Run.objects.filter(ingestion=ingestion).update(status=RunStatus.SUCCESS)

    assert ScheduleFiring.objects.count() == 3
    assert Run.objects.filter(ingestion=ingestion, trigger="schedule").count() == 3


# --- scheduled refreshes -------------------------------------------------------------------


@pytest.fixture
def costly(settings, loaded):
    """The loaded ingestion, whose full refresh costs more than the plan threshold."""
    loaded.cost_per_gb_usd = 900_000
    loaded.save(update_fields=["cost_per_gb_usd"])
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = 0.1
    return loaded


def scheduled_refresh(ingestion, actor, action=ScheduleAction.FULL_REFRESH):
    return schedule_set(
        ingestion=ingestion, actor=actor, action=action, cron="0 2 * * *", timezone="UTC", now=NOW
    )


SLOT = datetime(2026, 6, 2, 2, 0, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_refresh_above_the_threshold_is_refused_without_approval(costly, admin):
    cost = refresh_preview(ingestion=costly, kind="full_refresh", actor=admin.user)
    assert cost.impact.estimated_cost_usd > 0.2
    schedule = scheduled_refresh(costly, admin.user)

    (firing,) = schedules_fire_due(now=SLOT)

    assert firing.outcome == FiringOutcome.REFUSED
    assert firing.reason == "APPROVAL_REQUIRED"
    assert "no admin approved" in firing.detail
    assert not RefreshOperation.objects.filter(ingestion=costly).exists()
    refusal = LogEntry.objects.filter(additional_data__operation="schedule_refused").get()
    assert refusal.additional_data["outcome"] == "refused"
    assert refusal.additional_data["schedule_id"] == schedule.public_id
    assert refusal.actor is None  # the system fired it

    # An approval below the estimate does not cover it either.
    schedule_approve(schedule=schedule, actor=admin.user, max_cost_usd=0.11)
    (firing,) = schedules_fire_due(now=SLOT + timedelta(days=1))
    assert (firing.outcome, firing.reason) == ("refused", "APPROVAL_REQUIRED")
    assert "approved maximum" in firing.detail


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_refresh_with_a_covering_approval_executes_as_its_owner(costly, admin):
    schedule = scheduled_refresh(costly, admin.user)
    schedule_approve(schedule=schedule, actor=admin.user, max_cost_usd=1_000_000)

    (firing,) = schedules_fire_due(now=SLOT)

    assert firing.outcome == FiringOutcome.FIRED, firing.detail
    operation = firing.operation
    assert operation.kind == "full_refresh"
    assert operation.status == OperationStatus.ACCEPTED
    assert operation.requested_by == admin.user
    assert operation.plan is not None  # the plan rule was followed, not bypassed
    assert operation.run.trigger == RunTrigger.FULL_REFRESH  # the operation's own run
    drain_queue()
    operation.refresh_from_db()
    assert LogEntry.objects.filter(additional_data__operation="schedule_approved").exists()
    assert LogEntry.objects.filter(additional_data__operation="schedule_fired").exists()


@pytest.mark.django_db(transaction=True)
def test_changing_the_expression_drops_the_approval(costly, admin):
    schedule = scheduled_refresh(costly, admin.user)
    schedule_approve(schedule=schedule, actor=admin.user, max_cost_usd=1_000_000)

    schedule = schedule_set(
        ingestion=costly,
        actor=admin.user,
        action=schedule.action,
        schedule=schedule,
        cron="0 3 * * *",
    )

    assert schedule.approved_max_cost_usd is None and schedule.approved_by is None


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_refresh_below_the_threshold_executes_without_approval(loaded, member):
    operator = member(Role.OPERATOR)
    scheduled_refresh(loaded, operator.user, action=ScheduleAction.FRESH_START)

    (firing,) = schedules_fire_due(now=SLOT)

    assert firing.outcome == FiringOutcome.FIRED, firing.detail
    assert firing.operation.kind == "fresh_start"
    assert firing.operation.requested_by == operator.user


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_refresh_of_a_protected_ingestion_is_refused(loaded, admin):
    scheduled_refresh(loaded, admin.user)
    loaded.protected = True
    loaded.save(update_fields=["protected"])

    (firing,) = schedules_fire_due(now=SLOT)

    assert (firing.outcome, firing.reason) == ("refused", "TABLE_PROTECTED")
    assert not RefreshOperation.objects.filter(ingestion=loaded).exists()
    assert audit_actions(loaded)[-1] == "schedule_refused"


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_refresh_fires_with_its_owners_current_role(loaded, admin):
    scheduled_refresh(loaded, admin.user)
    admin.user.memberships.update(role=Role.VIEWER)

    (firing,) = schedules_fire_due(now=SLOT)

    assert (firing.outcome, firing.reason) == ("refused", "INSUFFICIENT_PERMISSIONS")


# --- a standing approval holds only while its approver may approve (issue 21 §2) -----------


@pytest.fixture
def costly_fresh(costly, source_dir):
    """The costly ingestion with new files, so that its fresh start costs above the threshold."""
    write_csv_files(source_dir, files=2, rows=25, start=4)
    return costly


def table_rows(ingestion) -> int:
    return open_table(ingestion.table_identifier).scan().to_arrow().num_rows


def approver_removed(approver):
    membership_remove(membership=approver.user.memberships.get())


def approver_demoted(approver):
    membership = approver.user.memberships.get()
    membership_set(tenant=membership.tenant, user=approver.user, role=Role.VIEWER)


def approver_deactivated(approver):
    approver.user.is_active = False
    approver.user.save(update_fields=["is_active"])


@pytest.mark.parametrize(
    ("lose_the_role", "words"),
    [
        (approver_removed, "no longer a member of this tenant"),
        (approver_demoted, "is now viewer here and may not approve"),
        (approver_deactivated, "is deactivated"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_an_approval_is_void_once_its_approver_may_no_longer_approve(
    costly_fresh, admin, member, lose_the_role, words
):
    """The attack: an admin approves a fresh start up to $100,000 and leaves the tenant; the
    schedule must not keep spending on their word."""
    operator = member(Role.OPERATOR)  # the owner keeps the role to fresh-start
    schedule = scheduled_refresh(costly_fresh, operator.user, action=ScheduleAction.FRESH_START)
    schedule_approve(schedule=schedule, actor=admin.user, max_cost_usd=100_000)
    plan = refresh_preview(ingestion=costly_fresh, kind="fresh_start", actor=operator.user)
    assert 0.1 < plan.impact.estimated_cost_usd <= 100_000  # the approval would cover it
    rows_before, runs_before = (
        table_rows(costly_fresh),
        Run.objects.filter(ingestion=costly_fresh).count(),
    )

    lose_the_role(admin)
    (firing,) = schedules_fire_due(now=SLOT)

    assert (firing.outcome, firing.reason) == ("refused", "APPROVAL_REQUIRED")
    assert words in firing.detail and "approval is void" in firing.detail
    # Nothing ran: no operation, no run, the victim's table as it was.
    assert not RefreshOperation.objects.filter(ingestion=costly_fresh).exists()
    assert Run.objects.filter(ingestion=costly_fresh).count() == runs_before
    assert table_rows(costly_fresh) == rows_before
    # The approval is gone, audited once, and the refusal is audited and shown.
    schedule.refresh_from_db()
    assert (schedule.approved_by, schedule.approved_max_cost_usd) == (None, None)
    voided = LogEntry.objects.get(additional_data__operation="schedule_approval_voided")
    assert voided.actor is None and words in voided.additional_data["reason"]
    assert voided.additional_data["approved_by"] == admin.user.username
    assert audit_actions(costly_fresh)[-2:] == ["schedule_approval_voided", "schedule_refused"]
    shown = operator.get(f"/api/v1/schedules/{schedule.public_id}").json()
    assert shown["approval"] is None
    assert shown["last_firing"]["outcome"] == "refused"
    assert words in shown["last_firing"]["detail"]
    console = Client()
    console.force_login(operator.user)
    page = console.get(reverse("ingestion-schedules", args=[costly_fresh.public_id]))
    assert page.status_code == 200 and words in page.content.decode()

    # The void approval stays void: the next firing is refused as unapproved.
    (firing,) = schedules_fire_due(now=SLOT + timedelta(days=1))
    assert (firing.outcome, firing.reason) == ("refused", "APPROVAL_REQUIRED")
    assert "no admin approved" in firing.detail
    assert not RefreshOperation.objects.filter(ingestion=costly_fresh).exists()


@pytest.mark.django_db(transaction=True)
def test_an_approval_whose_approver_is_still_an_admin_keeps_covering_firings(
    costly_fresh, admin, member
):
    operator = member(Role.OPERATOR)
    schedule = scheduled_refresh(costly_fresh, operator.user, action=ScheduleAction.FRESH_START)
    schedule_approve(schedule=schedule, actor=admin.user, max_cost_usd=100_000)
    # An unrelated change of the approver's membership elsewhere changes nothing here.
    membership_set(tenant=TenantFactory(), user=admin.user, role=Role.VIEWER)

    (firing,) = schedules_fire_due(now=SLOT)

    assert firing.outcome == FiringOutcome.FIRED, firing.detail
    schedule.refresh_from_db()
    assert schedule.approved_by == admin.user
    assert not LogEntry.objects.filter(additional_data__operation="schedule_approval_voided")


@pytest.mark.django_db(transaction=True)
def test_ten_workers_firing_after_the_approver_left_void_it_once_and_refuse_once(
    costly_fresh, admin, member
):
    operator = member(Role.OPERATOR)
    schedule = scheduled_refresh(costly_fresh, operator.user, action=ScheduleAction.FRESH_START)
    schedule_approve(schedule=schedule, actor=admin.user, max_cost_usd=100_000)
    approver_removed(admin)
    workers = 10
    barrier = threading.Barrier(workers)
    fired: list[int] = []
    errors: list[BaseException] = []

    def worker():
        try:
            barrier.wait()
            fired.append(len(schedules_fire_due(now=SLOT)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(fired) == [0] * (workers - 1) + [1]
    (firing,) = ScheduleFiring.objects.filter(schedule=schedule)
    assert (firing.outcome, firing.reason) == ("refused", "APPROVAL_REQUIRED")
    assert not RefreshOperation.objects.filter(ingestion=costly_fresh).exists()
    actions = audit_actions(costly_fresh)
    assert actions.count("schedule_approval_voided") == 1
    assert actions.count("schedule_refused") == 1
    assert Schedule.objects.get(pk=schedule.pk).approved_max_cost_usd is None


# --- a schedule paused or changed between its read and its firing does not fire ------------


def pause(schedule):
    schedule_pause(schedule=Schedule.objects.get(pk=schedule.pk), actor=schedule.created_by)


def change(schedule):
    fresh = Schedule.objects.get(pk=schedule.pk)
    schedule_set(
        ingestion=fresh.ingestion,
        actor=fresh.created_by,
        action=fresh.action,
        schedule=fresh,
        cron="0 3 * * *",
    )


@pytest.mark.parametrize("meanwhile", [pause, change])
@pytest.mark.parametrize("step", ["_fire", "_fire_refresh"])
@pytest.mark.django_db(transaction=True)
def test_a_schedule_paused_or_changed_between_its_read_and_its_firing_does_not_fire(
    loaded, member, monkeypatch, meanwhile, step
):
    """`_fire` is the claim (the schedule was read by the due query); `_fire_refresh` runs
    after the claim committed. Either way the other request wins and nothing runs."""
    operator = member(Role.OPERATOR)
    schedule = scheduled_refresh(loaded, operator.user, action=ScheduleAction.FRESH_START)
    real = getattr(firing_module, step)

    def meanwhile_then(firing_or_schedule, **kwargs):
        meanwhile(schedule)  # another request, committed before this worker goes on
        return real(firing_or_schedule, **kwargs)

    monkeypatch.setattr(firing_module, step, meanwhile_then)
    rows_before = table_rows(loaded)

    firings = schedules_fire_due(now=SLOT)

    assert not RefreshOperation.objects.filter(ingestion=loaded).exists()
    assert table_rows(loaded) == rows_before
    if step == "_fire":  # before the claim: no firing at all
        assert firings == [] and not ScheduleFiring.objects.exists()
    else:  # claimed, then found changed: recorded as skipped, audited
        (firing,) = firings
        assert (firing.outcome, firing.reason) == ("skipped", "SCHEDULE_CHANGED")
        assert "before this firing started" in firing.detail
        assert audit_actions(loaded)[-1] == "schedule_fired"
    fresh = Schedule.objects.get(pk=schedule.pk)
    assert fresh.paused or fresh.cron == "0 3 * * *"


# --- the schedules API: permissions and tenants -----------------------------------------------


@pytest.mark.django_db
def test_schedule_permissions_follow_roles(member, tenant):
    IngestionFactory(tenant=tenant, public_id="sales")
    viewer, operator, admin = (member(role) for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN))
    run_schedule = {"schedule": {"cron": "0 2 * * *"}}
    body = {"action": "full_refresh", "cron": "0 2 * * *", "timezone": "Europe/Berlin"}
    url = "/api/v1/ingestions/sales/schedules"

    assert viewer.patch("/api/v1/ingestions/sales", run_schedule, format="json").status_code == 403
    assert (
        operator.patch("/api/v1/ingestions/sales", run_schedule, format="json").status_code == 403
    )
    assert viewer.post(url, body, format="json").status_code == 403
    refused = operator.post(url, body, format="json")
    assert refused.status_code == 403
    assert refused.json()["error_code"] == "INSUFFICIENT_PERMISSIONS"
    fresh = operator.post(url, {**body, "action": "fresh_start"}, format="json")
    assert fresh.status_code == 201, fresh.json()
    created = admin.post(url, body, format="json")
    assert created.status_code == 201, created.json()
    schedule_id = created.json()["id"]
    assert created.json()["created_by"] == admin.user.username
    assert len(created.json()["next_fire_times"]) == 3
    assert admin.post(url, {**body, "action": "run"}, format="json").status_code == 400

    assert [item["action"] for item in viewer.get(url).json()] == ["full_refresh", "fresh_start"]
    approve = f"/api/v1/schedules/{schedule_id}/approve"
    assert operator.post(approve, {"max_cost_usd": 900}, format="json").status_code == 403
    approved = admin.post(approve, {"max_cost_usd": 900}, format="json")
    assert approved.status_code == 200
    assert approved.json()["approval"]["max_cost_usd"] == 900.0
    assert approved.json()["approval"]["approved_by"] == admin.user.username

    detail = f"/api/v1/schedules/{schedule_id}"
    assert operator.patch(detail, {"paused": True}, format="json").status_code == 403
    paused = admin.patch(detail, {"paused": True}, format="json")
    assert paused.status_code == 200 and paused.json()["next_fire_times"] == []
    bad = admin.patch(detail, {"cron": "*/2 * * * *"}, format="json")
    assert bad.status_code == 400 and bad.json()["error_code"] == "VALIDATION_ERROR"
    assert operator.delete(detail).status_code == 403
    assert admin.delete(detail).status_code == 204
    assert admin.get(detail).status_code == 404


@pytest.mark.django_db
def test_another_tenants_schedules_are_not_found(member, tenant, other_tenant):
    ingestion = IngestionFactory(tenant=tenant, public_id="sales")
    owner = member(Role.ADMIN)
    schedule = schedule_set(
        ingestion=ingestion, actor=owner.user, action="full_refresh", cron="0 2 * * *"
    )
    stranger = member(Role.ADMIN, tenant_obj=other_tenant)

    for method, url in [
        ("get", "/api/v1/ingestions/sales/schedules"),
        ("post", "/api/v1/ingestions/sales/schedules"),
        ("get", f"/api/v1/schedules/{schedule.public_id}"),
        ("patch", f"/api/v1/schedules/{schedule.public_id}"),
        ("delete", f"/api/v1/schedules/{schedule.public_id}"),
        ("post", f"/api/v1/schedules/{schedule.public_id}/approve"),
    ]:
        response = getattr(stranger, method)(url, {}, format="json")
        assert response.status_code == 404, (method, url, response.json())
    assert Schedule.objects.filter(pk=schedule.pk, paused=False).exists()
