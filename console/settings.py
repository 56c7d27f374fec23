"""Settings, all read from environment variables with documented defaults, in this one place.

| variable | default | meaning |
|---|---|---|
| AUTOLOADER_DATA_DIR | ./var | where everything the product writes goes by default |
| DATABASE_URL | sqlite:///$DATA_DIR/autoloader.sqlite3 | state DB (PostgreSQL in production) |
| AUTOLOADER_CATALOG_URI | sqlite:///$DATA_DIR/catalog.db | pyiceberg SQL catalog |
| AUTOLOADER_CATALOG_NAME | autoloader | Iceberg catalog name |
| AUTOLOADER_WAREHOUSE | file://$DATA_DIR/warehouse | Iceberg warehouse location |
| DJANGO_DEBUG | 1 | 0 for production |
| DJANGO_SECRET_KEY | random, in $DATA_DIR/secret_key (DEBUG only) | required if DEBUG=0 |
| DJANGO_ALLOWED_HOSTS | localhost,127.0.0.1,[::1] | comma separated |
| AUTOLOADER_S3_ENDPOINT_URL, _REGION, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY | AWS_* | S3 defaults |
| AUTOLOADER_SECRETS_KEY | in $DATA_DIR/secrets_key (DEBUG only) | encrypts location secrets |
| AUTOLOADER_LISTING_MAX_ENTRIES / _MAX_SECONDS | 1000000 / 30 | files / seconds of one listing |
| AUTOLOADER_PREVIEW_RATE_PER_USER / _PER_TENANT | 30/m / 120/m | check-sources and dry-runs |
| AUTOLOADER_LISTINGS_PER_TENANT | 2 | a tenant's source listings at once for web requests |
| AUTOLOADER_MAINTENANCE_INTERVAL_SECONDS | 3600 | how often a table is maintained at most |
| AUTOLOADER_MAINTENANCE_AFTER_RUNS | 100 | writing runs that make a table due sooner (0: off) |
| AUTOLOADER_SNAPSHOT_RETENTION_HOURS / _RETAIN_LAST | 24 / 10 | snapshots kept |
| AUTOLOADER_COMPACT_SMALL_FILE_BYTES / _MIN_FILES / _MAX_BYTES | 32 MiB / 10 / 512 MiB | |
| AUTOLOADER_ORPHAN_MIN_AGE_HOURS | 1 | age before an unreferenced file is deleted |
| AUTOLOADER_QUARANTINE_AFTER_FAILURES | 3 | failed runs in a row before quarantine (0: never) |
| AUTOLOADER_WEBHOOK_ALLOWED_HOSTS | (none) | private host:port (IP:port) webhooks may reach |
| AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS | 10 | timeout of one webhook delivery |
| AUTOLOADER_WEBHOOK_MAX_ATTEMPTS | 8 | attempts before a delivery is dead |
| AUTOLOADER_WEBHOOK_BACKOFF_SECONDS | 30 | first retry delay, doubled each attempt (+ jitter) |
| AUTOLOADER_WEBHOOK_DELIVERY_INTERVAL_SECONDS | 2 | how often the worker sends due deliveries |
| AUTOLOADER_WEBHOOK_DELIVERY_THREADS | 8 | webhook deliveries sent at once by one worker |
| AUTOLOADER_WEBHOOK_CONCURRENCY_PER_TENANT / _ENDPOINT | 2 / 1 | of those, per tenant / host:port |
| AUTOLOADER_WEBHOOKS_PER_TENANT | 20 | webhooks one tenant may have |
| AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS | 300 | shortest gap between two firings of a schedule |
| AUTOLOADER_SPARK_MASTER | local[*] | Spark master: local[*], spark://, k8s://, yarn |
| AUTOLOADER_SPARK_CATALOG | (the embedded engine's) | Spark catalog of the spark engine's tables |
| AUTOLOADER_SPARK_CONF | {} | JSON object of Spark configuration, passed verbatim |
| AUTOLOADER_SPARK_MAX_CORES | 0 (all offered) | cores of the worker's application (cores.max) |
| AUTOLOADER_SPARK_IDLE_SECONDS | 30 | stop the worker's Spark application once unused this long |
"""

import json
import os
import secrets
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _env_first(*names: str) -> str:
    """The first of `names` set to a non-empty value, else ""."""
    return next((os.environ[name] for name in names if os.environ.get(name)), "")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DATA_DIR = Path(os.environ.get("AUTOLOADER_DATA_DIR", BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", True)


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0.")
    # Development only: one random key per data dir, never committed.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # Only for migration ingestions 0008, which converts its tokens (its admin is unregistered).
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "auditlog",
    "django_tasks",
    "django_tasks_db",
    "ingestions",
    "refresh",
    "webhooks",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'autoloader.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker share one file: wait for locks instead of failing,
    # take the write lock up front (no upgrade deadlocks), and let readers run beside a writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file (worker processes must share it), one per test process so that
    # concurrent test runs never share a database.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"autoloader-test-{os.getpid()}.sqlite3")
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "ingestions.permissions.TenantRoleBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request when it is missing
# Serve straight from the app and package folders: no collectstatic step needed to run.
WHITENOISE_USE_FINDERS = True

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "autoloader_cache",
    }
}

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "ingestions.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["console.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "console.api_errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Autoloader Console API",
    "DESCRIPTION": "Load files into Apache Iceberg tables and refresh them safely.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Choice sets that share a field name get names of their own.
    "ENUM_NAME_OVERRIDES": {
        "MaintenanceActionEnum": "ingestions.models.MaintenanceAction",
        "ScheduleActionEnum": "refresh.models.ScheduleAction",
        "BatchOperationEnum": ["full_refresh", "fresh_start"],
        "VerifyStatusEnum": "ingestions.models.VerifyStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "console.schema.postprocess_schema",
    ],
}

# --- Autoloader: engine, runs ----------------------------------------------------------
AUTOLOADER_CATALOG_NAME = os.environ.get("AUTOLOADER_CATALOG_NAME", "autoloader")
AUTOLOADER_CATALOG_URI = os.environ.get(
    "AUTOLOADER_CATALOG_URI", f"sqlite:///{DATA_DIR / 'catalog.db'}"
)
AUTOLOADER_WAREHOUSE = os.environ.get("AUTOLOADER_WAREHOUSE", (DATA_DIR / "warehouse").as_uri())
# A batch is one Iceberg snapshot. It closes at the first bound it reaches: bytes of source
# files, rows read, seconds spent reading (so a long run reports progress and sees a cancel
# between commits), or files. A commit costs the same for 1 file or 10,000, so the bounds
# are sizes; the files bound is only an upper limit (1 = a commit per file).
AUTOLOADER_BATCH_MAX_BYTES = env_int("AUTOLOADER_BATCH_MAX_BYTES", 512 * 1024 * 1024)
AUTOLOADER_BATCH_MAX_ROWS = env_int("AUTOLOADER_BATCH_MAX_ROWS", 10_000_000)
AUTOLOADER_BATCH_MAX_SECONDS = env_float("AUTOLOADER_BATCH_MAX_SECONDS", 30.0)
AUTOLOADER_BATCH_MAX_FILES = env_int("AUTOLOADER_BATCH_MAX_FILES", 100_000)
# A running run whose heartbeat is older than this is taken to have lost its worker.
AUTOLOADER_RUN_STALE_SECONDS = env_float("AUTOLOADER_RUN_STALE_SECONDS", 120.0)
# How often the worker looks for runs whose worker died.
AUTOLOADER_REAPER_INTERVAL_SECONDS = env_float("AUTOLOADER_REAPER_INTERVAL_SECONDS", 15.0)
AUTOLOADER_DEFAULT_COST_PER_GB_USD = env_float("AUTOLOADER_DEFAULT_COST_PER_GB_USD", 0.25)

# --- Table maintenance (docs/maintenance.md) -------------------------------------------
# A table is maintained at most this often, and only while runs keep changing it.
AUTOLOADER_MAINTENANCE_INTERVAL_SECONDS = env_float(
    "AUTOLOADER_MAINTENANCE_INTERVAL_SECONDS", 3600.0
)
# ... or sooner, once this many runs wrote to it since its last pass (0: by time only).
AUTOLOADER_MAINTENANCE_AFTER_RUNS = env_int("AUTOLOADER_MAINTENANCE_AFTER_RUNS", 100)
# Snapshots older than this are expired, except the newest AUTOLOADER_SNAPSHOT_RETAIN_LAST.
AUTOLOADER_SNAPSHOT_RETENTION_HOURS = env_float("AUTOLOADER_SNAPSHOT_RETENTION_HOURS", 24.0)
AUTOLOADER_SNAPSHOT_RETAIN_LAST = env_int("AUTOLOADER_SNAPSHOT_RETAIN_LAST", 10)
# Data files below this size are compacted once there are at least _MIN_FILES of them,
# at most _MAX_BYTES of them per commit (they are read into memory).
AUTOLOADER_COMPACT_SMALL_FILE_BYTES = env_int("AUTOLOADER_COMPACT_SMALL_FILE_BYTES", 32 * 1024**2)
AUTOLOADER_COMPACT_MIN_FILES = env_int("AUTOLOADER_COMPACT_MIN_FILES", 10)
AUTOLOADER_COMPACT_MAX_BYTES = env_int("AUTOLOADER_COMPACT_MAX_BYTES", 512 * 1024**2)
# Files no metadata references are deleted once older than this (a write may be in flight).
AUTOLOADER_ORPHAN_MIN_AGE_HOURS = env_float("AUTOLOADER_ORPHAN_MIN_AGE_HOURS", 1.0)
# A file that this many runs in a row failed to load is quarantined (0: never).
AUTOLOADER_QUARANTINE_AFTER_FAILURES = env_int("AUTOLOADER_QUARANTINE_AFTER_FAILURES", 3)

# --- Webhooks (docs/webhooks.md) -------------------------------------------------------
# host:port (or IP:port, [IPv6]:port) webhooks may reach although not public (loopback,
# private...); a bare host means its scheme's default port only. Empty: public hosts only.
AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = env_list("AUTOLOADER_WEBHOOK_ALLOWED_HOSTS", "")
AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS = env_float("AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS", 10.0)
AUTOLOADER_WEBHOOK_MAX_ATTEMPTS = env_int("AUTOLOADER_WEBHOOK_MAX_ATTEMPTS", 8)
AUTOLOADER_WEBHOOK_BACKOFF_SECONDS = env_float("AUTOLOADER_WEBHOOK_BACKOFF_SECONDS", 30.0)
AUTOLOADER_WEBHOOK_DELIVERY_INTERVAL_SECONDS = env_float(
    "AUTOLOADER_WEBHOOK_DELIVERY_INTERVAL_SECONDS", 2.0
)
# Deliveries go out concurrently: one tenant's (or one endpoint's) stalled receiver holds
# at most its own slots, never the others' (docs/webhooks.md).
AUTOLOADER_WEBHOOK_DELIVERY_THREADS = env_int("AUTOLOADER_WEBHOOK_DELIVERY_THREADS", 8)
AUTOLOADER_WEBHOOK_CONCURRENCY_PER_TENANT = env_int("AUTOLOADER_WEBHOOK_CONCURRENCY_PER_TENANT", 2)
AUTOLOADER_WEBHOOK_CONCURRENCY_PER_ENDPOINT = env_int(
    "AUTOLOADER_WEBHOOK_CONCURRENCY_PER_ENDPOINT", 1
)
AUTOLOADER_WEBHOOKS_PER_TENANT = env_int("AUTOLOADER_WEBHOOKS_PER_TENANT", 20)
# Schedules (`refresh.schedules`): a cron firing more often than this is refused.
AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS = env_int("AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS", 300)

# --- Refresh operations ----------------------------------------------------------------
# Off -> the refresh endpoints answer 503 REFRESH_API_DISABLED (the granular API stays).
ENABLE_REFRESH_OPERATIONS_API = env_bool("ENABLE_REFRESH_OPERATIONS_API", True)
# Warnings in previews and responses.
REFRESH_HIGH_COST_USD = env_float("REFRESH_HIGH_COST_USD", 100.0)
REFRESH_LARGE_OPERATION_FILES = env_int("REFRESH_LARGE_OPERATION_FILES", 1000)
# Above this estimated cost the call must carry a recent dry-run's plan_id ...
REFRESH_PLAN_REQUIRED_ABOVE_USD = env_float("REFRESH_PLAN_REQUIRED_ABOVE_USD", 500.0)
# ... made at most this many seconds ago, and is refused if the impact grew by more than this.
REFRESH_PLAN_TTL_SECONDS = env_int("REFRESH_PLAN_TTL_SECONDS", 15 * 60)
REFRESH_PLAN_MAX_GROWTH = env_float("REFRESH_PLAN_MAX_GROWTH", 0.10)
# Duration estimates (`refresh.estimates`): seconds = start + per file x files + bytes /
# throughput, fitted on the ingestion's last REFRESH_ESTIMATE_RUNS measured runs; with fewer
# than REFRESH_ESTIMATE_MIN_RUNS the fit is blended with the engine's calibrated costs below,
# which alone make the estimate before a first run. Derived on a 2-core machine reading a
# local disk by `bench/estimate_error.py --calibrate` (docs/benchmarks.md section 8): re-run it
# on your hardware and storage, and set these, when estimates before a first run are off.
REFRESH_DEFAULT_START_SECONDS = env_float("REFRESH_DEFAULT_START_SECONDS", 0.05)
REFRESH_DEFAULT_SECONDS_PER_FILE = env_float("REFRESH_DEFAULT_SECONDS_PER_FILE", 0.0004)
REFRESH_DEFAULT_THROUGHPUT_MB_PER_S = env_float("REFRESH_DEFAULT_THROUGHPUT_MB_PER_S", 88.0)
REFRESH_SPARK_DEFAULT_START_SECONDS = env_float("REFRESH_SPARK_DEFAULT_START_SECONDS", 2.0)
REFRESH_SPARK_DEFAULT_SECONDS_PER_FILE = env_float("REFRESH_SPARK_DEFAULT_SECONDS_PER_FILE", 0.01)
REFRESH_SPARK_DEFAULT_THROUGHPUT_MB_PER_S = env_float(
    "REFRESH_SPARK_DEFAULT_THROUGHPUT_MB_PER_S", 10.0
)
# The spark engine's costs come from `--engine spark --quick` (local[*]): Spark's cost per
# file is not linear (8 ms a tiny file at 20,000 files, 16 ms at 2,000 small ones).
# What the worker's Spark application takes to start (driver, executors, jars), added to a
# spark run's estimate when the worker has none live (AUTOLOADER_SPARK_IDLE_SECONDS): ~20 s
# for local[*] here (a first run against a warm one), 30-100 s on a standalone cluster
# (issue 23): set what yours takes.
REFRESH_SPARK_STARTUP_SECONDS = env_float("REFRESH_SPARK_STARTUP_SECONDS", 20.0)
REFRESH_ESTIMATE_RUNS = env_int("REFRESH_ESTIMATE_RUNS", 20)
REFRESH_ESTIMATE_MIN_RUNS = env_int("REFRESH_ESTIMATE_MIN_RUNS", 3)
# Full refresh / fresh start: "atomic" builds the new table beside the live one and
# publishes it when the run ends (no downtime); "drop_first" drops at once (the PRD's way).
REFRESH_DEFAULT_MODE = os.environ.get("REFRESH_DEFAULT_MODE", "atomic")
# Days a destructive operation keeps what it replaced so it can be undone (0: no undo);
# an ingestion's `retain_days` and a request's override it.
REFRESH_RETAIN_DAYS = env_int("REFRESH_RETAIN_DAYS", 7)
REFRESH_MAX_RETAIN_DAYS = env_int("REFRESH_MAX_RETAIN_DAYS", 90)
# An operation's process beats every 1/6 of this; silent this long, it died: the worker's
# reaper finishes its remaining steps (or its undo).
REFRESH_STALE_SECONDS = env_int("REFRESH_STALE_SECONDS", 30)
# Executions of each kind per table ("5/h", "100/15m"); dry-runs and refused calls are not
# counted (refresh/limits.py).
REFRESH_RATE_LIMITS = {
    "full_refresh": os.environ.get("REFRESH_RATE_FULL_REFRESH", "5/h"),
    "fresh_start": os.environ.get("REFRESH_RATE_FRESH_START", "10/h"),
    "drop_table": os.environ.get("REFRESH_RATE_DROP_TABLE", "10/h"),
    "clear_processed_files": os.environ.get("REFRESH_RATE_CLEAR_PROCESSED_FILES", "10/h"),
    "resume": os.environ.get("REFRESH_RATE_RESUME", "20/h"),
    "undo": os.environ.get("REFRESH_RATE_UNDO", "10/h"),
}
# Ceilings over every table: destructive executions (full refresh, fresh start, drop
# table, clear history) one user, and one tenant, may start; "" turns one off.
REFRESH_RATE_CEILINGS = {
    "user": os.environ.get("REFRESH_RATE_PER_USER", "30/h"),
    "tenant": os.environ.get("REFRESH_RATE_PER_TENANT", "100/h"),
}
IDEMPOTENCY_KEY_TTL_SECONDS = env_int("IDEMPOTENCY_KEY_TTL_SECONDS", 24 * 3600)
# `/metrics` answers a scraper presenting `Authorization: Bearer <this>`, or a staff login.
AUTOLOADER_METRICS_TOKEN = os.environ.get("AUTOLOADER_METRICS_TOKEN", "")

# --- Scaling out: S3, the Spark engine, production static files (docs/deploy.md) -------
# S3 for the Iceberg warehouse, and the default credentials of S3 storage locations granted
# without keys of their own. Each AUTOLOADER_S3_* falls back to the standard AWS variable
# (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), which the code
# then passes to pyarrow and pyiceberg explicitly (pyarrow's own S3FileSystem ignores
# AWS_ENDPOINT_URL).
AUTOLOADER_S3_ENDPOINT_URL = _env_first(
    "AUTOLOADER_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
)
AUTOLOADER_S3_REGION = _env_first("AUTOLOADER_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
AUTOLOADER_S3_ACCESS_KEY_ID = _env_first("AUTOLOADER_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
AUTOLOADER_S3_SECRET_ACCESS_KEY = _env_first(
    "AUTOLOADER_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"
)
# Storage locations (manage.py grant_location): their S3 secret keys are stored encrypted
# with this Fernet key (44 url-safe base64 characters; `manage.py grant_location
# --new-secrets-key` prints one). In DEBUG a random key is kept in $DATA_DIR/secrets_key.
AUTOLOADER_SECRETS_KEY = os.environ.get("AUTOLOADER_SECRETS_KEY", "")
# Listing a source stops with SOURCE_LISTING_LIMIT past this many entries or seconds, so a
# huge folder answers with an error instead of holding a web worker (and its memory).
# The demo's landing zone (`make run`): beside the data dir, never inside it, since no
# storage location may overlap the product's own files.
AUTOLOADER_DEMO_LANDING_DIR = Path(
    os.environ.get("AUTOLOADER_DEMO_LANDING_DIR", DATA_DIR.parent / f"{DATA_DIR.name}-landing")
).resolve()
AUTOLOADER_LISTING_MAX_ENTRIES = env_int("AUTOLOADER_LISTING_MAX_ENTRIES", 1_000_000)
AUTOLOADER_LISTING_MAX_SECONDS = env_float("AUTOLOADER_LISTING_MAX_SECONDS", 30.0)
# What lists a source for a web request (check source, dry-runs) is rate-limited per user and
# per tenant, and one tenant runs at most this many such listings at once (0: no cap), so
# its heavy previews cannot take every web thread from the other tenants.
AUTOLOADER_PREVIEW_RATE_LIMITS = {
    "user": os.environ.get("AUTOLOADER_PREVIEW_RATE_PER_USER", "30/m"),
    "tenant": os.environ.get("AUTOLOADER_PREVIEW_RATE_PER_TENANT", "120/m"),
}
AUTOLOADER_LISTINGS_PER_TENANT = env_int("AUTOLOADER_LISTINGS_PER_TENANT", 2)
# Spark engine: local[*], spark://host:7077, k8s://https://host:443 or yarn. Its tables are
# in the embedded engine's catalog (AUTOLOADER_CATALOG_NAME, the same catalog database and
# warehouse, through Iceberg's JDBC catalog) unless AUTOLOADER_SPARK_CATALOG names a catalog
# configured on the cluster or in AUTOLOADER_SPARK_CONF, e.g. an Iceberg REST catalog "lake".
AUTOLOADER_SPARK_MASTER = os.environ.get("AUTOLOADER_SPARK_MASTER", "local[*]")
AUTOLOADER_SPARK_CATALOG = os.environ.get("AUTOLOADER_SPARK_CATALOG", "")
# Spark configuration passed through verbatim, as a JSON object of strings, e.g.
# {"spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog", ...}.
AUTOLOADER_SPARK_CONF = {
    str(key): str(value)
    for key, value in json.loads(os.environ.get("AUTOLOADER_SPARK_CONF") or "{}").items()
}
# A good citizen on a shared cluster: at most this many cores (0: Spark's default, all a
# standalone master offers), and no executors held between runs: the worker stops its
# application once unused for this long, and starts one again for the next run.
AUTOLOADER_SPARK_MAX_CORES = env_int("AUTOLOADER_SPARK_MAX_CORES", 0)
AUTOLOADER_SPARK_IDLE_SECONDS = env_float("AUTOLOADER_SPARK_IDLE_SECONDS", 30.0)
if not DEBUG:
    # Hashed, compressed copies made by `collectstatic` (`make serve` runs it), served by
    # WhiteNoise with far-future cache headers.
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# --- Production hardening (on whenever DEBUG is off) -----------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # HTMX reads the token from the page, not the cookie.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_SSL_HOST = os.environ.get("DJANGO_SECURE_SSL_HOST") or None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "ingestions": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "refresh": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    },
}
