"""factory_boy factories for the domain."""

import factory
from django.contrib.auth import get_user_model

from ingestions.models import Ingestion, Membership, Role, Tenant


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.LazyAttribute(lambda tenant: tenant.slug.title())


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user-{n}")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def save_password(self, create, extracted, **kwargs):
        if create:
            self.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    tenant = factory.SubFactory(TenantFactory)
    role = Role.VIEWER


class IngestionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Ingestion
        skip_postgeneration_save = True  # granting the source changes nothing in the row

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Ingestion {n}")
    public_id = factory.Sequence(lambda n: f"ing-test-{n}")
    source_uri = "/nonexistent"
    source_format = "csv"
    source_pattern = ""
    destination_table = factory.Sequence(lambda n: f"raw.table_{n}")

    @factory.post_generation
    def grant_source(self, create, extracted, **kwargs):
        """Grant the tenant its source folder as a storage location, as platform staff would
        (`grant_source=False` to leave the tenant without it). A folder that overlaps
        another tenant's location stays ungranted: reading it is refused, as it should be."""
        if create and extracted is not False:
            grant_location(self.tenant, self.source_uri)


class RunFactory(factory.django.DjangoModelFactory):
    """A run row as the worker would leave it; pass `status=` (QUEUED by default)."""

    class Meta:
        model = "ingestions.Run"

    ingestion = factory.SubFactory(IngestionFactory)


class ProcessedFileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "ingestions.ProcessedFile"

    ingestion = factory.SubFactory(IngestionFactory)
    path = factory.Sequence(lambda n: f"part-{n:04d}.csv")
    size_bytes = 1024

    @factory.lazy_attribute
    def loaded_at(self):
        # Imported here so this addition stays an append to the module.
        from django.utils import timezone

        return timezone.now()


def grant_location(tenant, uri: str):
    """Grant `tenant` the location `uri` unless one of its locations covers it already;
    returns the location, or None when it would overlap another tenant's."""
    from django.core.exceptions import ValidationError

    from ingestions.errors import SourceNotAllowedError
    from ingestions.locations import location_grant, source_resolve

    try:
        return source_resolve(tenant=tenant, uri=uri)[1]
    except SourceNotAllowedError:
        pass
    try:
        return location_grant(tenant=tenant, uri=uri)
    except ValidationError:
        return None
