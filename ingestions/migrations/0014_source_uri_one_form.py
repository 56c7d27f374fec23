"""Local sources stored as bare paths take the one form every other is stored in,
file:///abs/path (`ingestions.locations.StoragePath.as_uri`): the API then returns what
the console shows. Reversible as a no-op: both forms name the same folder."""

from urllib.parse import quote

from django.db import migrations


def to_file_uri(apps, schema_editor):
    Ingestion = apps.get_model("ingestions", "Ingestion")
    for ingestion in Ingestion.objects.filter(source_uri__startswith="/").only("source_uri"):
        ingestion.source_uri = "file://" + quote(ingestion.source_uri)
        ingestion.save(update_fields=["source_uri"])


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0013_gone_files")]

    operations = [migrations.RunPython(to_file_uri, migrations.RunPython.noop)]
