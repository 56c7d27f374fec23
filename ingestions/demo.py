"""The demo: two tenants, their users and ingestions over generated files (idempotent)."""

import json
import os
import random
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import transaction

from .locations import location_grant
from .models import ApiToken, Ingestion, Membership, Role, Run, StorageLocation, Tenant
from .runs import run_request
from .services import ingestion_create
from .tokens import key_digest, token_create, token_revoke

REGIONS = ["north", "south", "east", "west"]
PRODUCTS = ["widget", "gadget", "gizmo", "doohickey", "sprocket"]
START = date(2026, 1, 1)


def write_sales_csv(folder: Path, days: int = 12, rows_per_day: int = 400) -> None:
    for offset in range(days):
        day = START + timedelta(days=offset)
        path = folder / f"{day:%Y-%m}" / f"sales-{day:%Y-%m-%d}.csv"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(offset)
        lines = ["order_id,order_date,region,product,quantity,unit_price"]
        for row in range(rows_per_day):
            lines.append(
                f"{offset * 100000 + row},{day.isoformat()},{rng.choice(REGIONS)},"
                f"{rng.choice(PRODUCTS)},{rng.randint(1, 20)},{rng.uniform(1, 250):.2f}"
            )
        path.write_text("\n".join(lines) + "\n")


def write_events_json(folder: Path, hours: int = 8, events_per_hour: int = 250) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for hour in range(hours):
        path = folder / f"events-2026-01-01T{hour:02d}.jsonl"
        if path.exists():
            continue
        rng = random.Random(1000 + hour)
        with path.open("w") as handle:
            for index in range(events_per_hour):
                handle.write(
                    json.dumps(
                        {
                            "event_id": hour * 10000 + index,
                            "user_id": rng.randint(1, 500),
                            "kind": rng.choice(["view", "click", "purchase"]),
                            "at": f"2026-01-01T{hour:02d}:{index % 60:02d}:00",
                        }
                    )
                    + "\n"
                )


def write_orders_parquet(folder: Path, files: int = 5, rows_per_file: int = 1000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        path = folder / f"orders-{index:03d}.parquet"
        if path.exists():
            continue
        rng = random.Random(2000 + index)
        table = pa.table(
            {
                "order_id": [index * 100000 + row for row in range(rows_per_file)],
                "customer": [f"customer-{rng.randint(1, 300)}" for _ in range(rows_per_file)],
                "amount": [round(rng.uniform(5, 500), 2) for _ in range(rows_per_file)],
            }
        )
        pq.write_table(table, path)


DEMO_INGESTIONS = [
    # tenant, public id, name, folder, format, pattern, table, writer
    (
        "acme",
        "sales-daily",
        "Daily sales (CSV)",
        "acme/sales",
        "csv",
        "*.csv",
        "raw.sales_data",
        write_sales_csv,
    ),
    (
        "acme",
        "web-events",
        "Web events (JSON lines)",
        "acme/events",
        "json",
        "*.jsonl",
        "raw.web_events",
        write_events_json,
    ),
    (
        "globex",
        "orders",
        "Orders (Parquet)",
        "globex/orders",
        "parquet",
        "*.parquet",
        "raw.orders",
        write_orders_parquet,
    ),
]
DEMO_USERS = [
    ("admin", "acme", Role.ADMIN),
    ("operator", "acme", Role.OPERATOR),
    ("viewer", "acme", Role.VIEWER),
    ("globex-admin", "globex", Role.ADMIN),
    # A member of two tenants: the console's tenant switcher is theirs.
    ("consultant", "acme", Role.OPERATOR),
    ("consultant", "globex", Role.VIEWER),
]
# Platform staff who reviews the audit in the Django admin: read-only, no tenant role.
DEMO_AUDITOR = "auditor"
AUDITOR_PERMISSIONS = [
    ("auditlog", "view_logentry"),
    ("refresh", "view_refreshoperation"),
    ("refresh", "view_refreshplan"),
    ("ingestions", "view_run"),
    ("ingestions", "view_tablemaintenance"),
]


def seed_demo(*, landing_dir: Path, password: str, queue_runs: bool = True) -> dict:
    """Create (or complete) the demo; returns what a person needs to try it.

    Each tenant is granted its own folder of `landing_dir` as a storage location, and its
    ingestions read from there.
    """
    tenants = {
        "acme": Tenant.objects.get_or_create(slug="acme", defaults={"name": "Acme Corp"})[0],
        "globex": Tenant.objects.get_or_create(slug="globex", defaults={"name": "Globex"})[0],
    }
    for slug, tenant in tenants.items():
        folder = landing_dir / slug
        folder.mkdir(parents=True, exist_ok=True)
        if not StorageLocation.objects.filter(tenant=tenant).exists():
            location_grant(tenant=tenant, uri=folder.as_uri(), name=f"{tenant.name} landing zone")
    users = {}
    for username, tenant_slug, role in DEMO_USERS:
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_password(password)
            user.save()
        Membership.objects.update_or_create(
            user=user, tenant=tenants[tenant_slug], defaults={"role": role}
        )
        users[username] = user
    auditor, created = get_user_model().objects.get_or_create(
        username=DEMO_AUDITOR, defaults={"is_staff": True}
    )
    if created:
        auditor.set_password(password)
        auditor.save()
        auditor.user_permissions.add(
            *[
                Permission.objects.get(content_type__app_label=app, codename=codename)
                for app, codename in AUDITOR_PERMISSIONS
            ]
        )
    source_root = landing_dir
    for (
        tenant_slug,
        public_id,
        name,
        folder,
        file_format,
        pattern,
        table,
        writer,
    ) in DEMO_INGESTIONS:
        writer(source_root / folder)
        tenant = tenants[tenant_slug]
        ingestion = Ingestion.objects.filter(tenant=tenant, public_id=public_id).first()
        if ingestion is not None and ingestion.source_uri != (source_root / folder).as_uri():
            # A demo seeded before storage locations read from inside the data dir.
            Ingestion.objects.filter(pk=ingestion.pk).update(
                source_uri=(source_root / folder).as_uri()
            )
        if ingestion is None:
            with transaction.atomic():
                ingestion = ingestion_create(
                    tenant=tenant,
                    actor=None,
                    public_id=public_id,
                    name=name,
                    source_uri=(source_root / folder).as_uri(),
                    source_format=file_format,
                    source_pattern=pattern,
                    destination_table=table,
                )
        if queue_runs and not Run.objects.filter(ingestion=ingestion).exists():
            run_request(ingestion=ingestion, actor=None, trigger="manual")
    key = demo_token_key(user=users["admin"])
    return {
        "users": [
            *[(u, t, r.value) for u, t, r in DEMO_USERS],
            (DEMO_AUDITOR, "the platform", "staff: reviews the audit in /admin/"),
        ],
        "token": key,
    }


# --- the demo admin's API token --------------------------------------------------------
# Only a token's digest is stored, so the demo keeps its key in the data dir (readable by
# its owner only) for `serve` to print and the next seed to reuse.
DEMO_TOKEN_NAME = "demo"  # noqa: S105 - a name, not a secret
DEMO_TOKEN_FILE = "demo-api-token"  # noqa: S105 - a file name


def demo_token_saved() -> str | None:
    """The demo admin's key saved in the data dir, if its token still exists."""
    path = settings.DATA_DIR / DEMO_TOKEN_FILE
    key = path.read_text().strip() if path.exists() else ""
    if key and ApiToken.objects.filter(key_digest=key_digest(key)).exists():
        return key
    return None


def demo_token_key(*, user) -> str:
    """The key of `user`'s token "demo": the saved one while it works, else a new one."""
    key = demo_token_saved()
    if key is not None:
        return key
    lost = ApiToken.objects.filter(user=user, name=DEMO_TOKEN_NAME).first()
    if lost is not None:  # its key is gone (a new data dir): replace it
        token_revoke(user=user, token_id=lost.pk)
    _token, key = token_create(user=user, name=DEMO_TOKEN_NAME)
    path = settings.DATA_DIR / DEMO_TOKEN_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    path.chmod(0o600)  # a file left from before keeps its mode through O_CREAT
    return key
