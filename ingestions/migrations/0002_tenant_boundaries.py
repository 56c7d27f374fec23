"""Tenant boundaries: storage locations, per-tenant catalog namespaces, one ingestion per table.

Existing ingestions keep the unprefixed table they already load (`table_identifier` =
`destination_table`): renaming live tables is not a migration's job. When two tenants'
ingestions loaded the same table, the first keeps it and the others move to a prefixed
table of their own, starting with an empty history. New ingestions always get
"<tenant prefix>__<namespace>.<table>".
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def fill_identifiers(apps, schema_editor):
    from ingestions.models import catalog_namespace_for

    Tenant = apps.get_model("ingestions", "Tenant")
    Ingestion = apps.get_model("ingestions", "Ingestion")
    taken = set()
    for tenant in Tenant.objects.order_by("pk"):
        prefix = catalog_namespace_for(tenant.slug)
        if prefix in taken:
            prefix = f"{prefix}_{tenant.pk}"
        taken.add(prefix)
        tenant.catalog_namespace = prefix
        tenant.save(update_fields=["catalog_namespace"])
    ProcessedFile = apps.get_model("ingestions", "ProcessedFile")
    namespaces = dict(Tenant.objects.values_list("pk", "catalog_namespace"))
    owned = set()
    for ingestion in Ingestion.objects.order_by("pk"):
        if ingestion.destination_table not in owned:
            # The first ingestion of a name keeps the table it has been loading.
            ingestion.table_identifier = ingestion.destination_table
            owned.add(ingestion.destination_table)
        else:
            # Another tenant's ingestion shared that table (the cross-tenant hole this
            # migration closes): it moves to a table of its own and, since none of the rows
            # its history names are there, loads every file again on its next run.
            namespace, table = ingestion.destination_table.split(".", 1)
            ingestion.table_identifier = f"{namespaces[ingestion.tenant_id]}__{namespace}.{table}"
            ProcessedFile.objects.filter(ingestion=ingestion).delete()
        ingestion.save(update_fields=["table_identifier"])


class Migration(migrations.Migration):
    dependencies = [
        ("ingestions", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="catalog_namespace",
            field=models.CharField(default="", editable=False, max_length=40),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="ingestion",
            name="table_identifier",
            field=models.CharField(default="", editable=False, max_length=200),
            preserve_default=False,
        ),
        migrations.RunPython(fill_identifiers, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="tenant",
            name="catalog_namespace",
            field=models.CharField(
                editable=False,
                help_text="Prefix of this tenant's Iceberg namespaces (set once, from the slug).",
                max_length=40,
                unique=True,
            ),
        ),
        migrations.AddConstraint(
            model_name="ingestion",
            constraint=models.UniqueConstraint(
                fields=("table_identifier",), name="one_ingestion_per_table"
            ),
        ),
        migrations.CreateModel(
            name="StorageLocation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("uri", models.CharField(max_length=1024, unique=True)),
                ("name", models.CharField(blank=True, default="", max_length=200)),
                ("s3_endpoint_url", models.CharField(blank=True, default="", max_length=512)),
                ("s3_region", models.CharField(blank=True, default="", max_length=64)),
                ("s3_access_key_id", models.CharField(blank=True, default="", max_length=128)),
                (
                    "s3_secret_access_key_encrypted",
                    models.TextField(blank=True, default="", editable=False),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="locations",
                        to="ingestions.tenant",
                    ),
                ),
            ],
            options={"ordering": ["tenant", "uri"]},
        ),
    ]
