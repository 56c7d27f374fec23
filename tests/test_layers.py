"""The house's floors (scripts/layers.py): no module imports a floor above its own, and the
apps above the domain are wired into it through `ingestions.hooks` at startup."""

import importlib.util
from pathlib import Path

from ingestions import hooks

ROOT = Path(__file__).resolve().parent.parent

# Upward imports still to remove, each with why it is there. Nothing may be added.
KNOWN: set[tuple[str, str]] = set()


def _layers():
    spec = importlib.util.spec_from_file_location("layers", ROOT / "scripts" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_a_floor_above_its_own():
    edges = {
        (path, target.split(".")[0]) for path, _line, _floor, target in _layers().upward_edges()
    }
    assert edges <= KNOWN, f"new upward imports: {sorted(edges - KNOWN)}"
    assert edges == KNOWN, f"removed, so drop them from KNOWN: {sorted(KNOWN - edges)}"


def test_the_check_sees_an_upward_import_inside_a_function():
    layers = _layers()
    tree = layers.ast.parse("def f():\n    from refresh.batches import x\nfrom .runs import y\n")
    found = layers._imported(tree, "ingestions.tasks", is_package=False)
    assert (2, "refresh.batches") in found and (3, "ingestions.runs") in found


def test_the_apps_above_register_their_guard_hooks_and_worker_passes():
    from ingestions.maintenance import maintenance_due
    from ingestions.runs import runs_recover_stale
    from refresh.batches import batches_sync_due, run_ended_sync
    from refresh.firing import schedules_fire_due
    from refresh.guards import refuse_during_refresh
    from webhooks.delivery import deliver_due_in_background

    recovery = hooks.periodic_jobs("recovery")
    assert recovery[0] is runs_recover_stale  # the domain's own recovery comes first
    assert {schedules_fire_due, batches_sync_due} <= set(recovery)
    assert hooks.periodic_jobs("maintenance") == (maintenance_due,)
    assert hooks.periodic_jobs("deliveries") == (deliver_due_in_background,)
    assert refuse_during_refresh in hooks._change_guards
    assert run_ended_sync in hooks._run_ended
    assert "schedule" in hooks._ingestion_fields  # the ingestion's run schedule


def test_the_apps_above_grant_their_own_permissions_to_admins_only():
    from ingestions.models import Role
    from ingestions.permissions import ROLE_PERMISSIONS

    for permission in ("webhooks.add_webhook", "webhooks.view_webhook", "refresh.approve_schedule"):
        assert permission in ROLE_PERMISSIONS[Role.ADMIN]
        assert permission not in ROLE_PERMISSIONS[Role.OPERATOR] | ROLE_PERMISSIONS[Role.VIEWER]
