"""DRF's one-token-per-user becomes a named API token "default" with the same key.

Existing automation keeps working: the key's digest is stored, so the same
`Authorization: Bearer <key>` authenticates. The clear-text DRF rows are then deleted (a
digest is all we keep); going back keeps the API tokens and cannot bring the clear keys back.
"""

import hashlib

from django.db import migrations

DEFAULT_NAME = "default"
PREFIX_LENGTH = 8  # a DRF key is 40 hex characters, without the "alc_" of new keys


def drf_tokens_to_api_tokens(apps, schema_editor):
    Token = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("ingestions", "ApiToken")
    for token in Token.objects.all().iterator():
        digest = hashlib.sha256(token.key.encode()).hexdigest()
        if not ApiToken.objects.filter(key_digest=digest).exists():
            taken = set(
                ApiToken.objects.filter(user_id=token.user_id).values_list("name", flat=True)
            )
            name, number = DEFAULT_NAME, 1
            while name in taken:
                number += 1
                name = f"{DEFAULT_NAME}-{number}"
            converted = ApiToken.objects.create(
                user_id=token.user_id,
                name=name,
                prefix=token.key[:PREFIX_LENGTH],
                key_digest=digest,
            )
            # When the key was made, not when it was converted.
            ApiToken.objects.filter(pk=converted.pk).update(created_at=token.created)
    Token.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("ingestions", "0007_failures_and_tokens"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [
        migrations.RunPython(drf_tokens_to_api_tokens, migrations.RunPython.noop),
    ]
