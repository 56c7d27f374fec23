"""Fixtures for scaling out: S3 on loopback (moto's server), Spark local[2], PostgreSQL."""

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest
from django.db import connection

SPARK_TEST_MASTER = "local[2]"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered on 127.0.0.1:{port} within {timeout} s")


# --- S3: moto's server mode on a loopback port ------------------------------------------


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API (moto's threaded server) on 127.0.0.1; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class S3Bucket:
    """A fresh bucket on the moto server, with the product's S3 settings pointing at it."""

    name: str
    endpoint_url: str

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}".rstrip("/")

    @property
    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=self.endpoint_url.removeprefix("http://"),
            scheme="http",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )

    def put(self, key: str, body: bytes) -> None:
        """Upload through the S3 API, as any producer of source files would."""
        with self.filesystem.open_output_stream(f"{self.name}/{key}") as stream:
            stream.write(body)

    def keys(self, prefix: str = "") -> list[str]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(f"{self.name}/{prefix}".rstrip("/"), recursive=True)
        return sorted(
            info.path.removeprefix(f"{self.name}/")
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def seed(self, keys: list[str], body: bytes = b"id\n1\n") -> None:
        """Store many small objects straight in the server's memory (10,000 PUTs take 30 s)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for key in keys:
            backend.put_object(self.name, key, body)


@pytest.fixture
def s3_bucket(moto_server, settings) -> S3Bucket:
    """A new bucket; AUTOLOADER_S3_* settings point at the moto server."""
    import pyarrow.fs as pafs

    settings.AUTOLOADER_S3_ENDPOINT_URL = moto_server
    settings.AUTOLOADER_S3_REGION = "us-east-1"
    settings.AUTOLOADER_S3_ACCESS_KEY_ID = "testing"
    settings.AUTOLOADER_S3_SECRET_ACCESS_KEY = "testing"
    bucket = S3Bucket(name=f"test-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server)
    creator = pafs.S3FileSystem(
        endpoint_override=moto_server.removeprefix("http://"),
        scheme="http",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    creator.create_dir(bucket.name)
    return bucket


# --- Spark: one local SparkContext per test session, with Iceberg's runtime ---------------


@pytest.fixture(scope="session")
def spark_session():
    """The shared local[2] SparkContext (~6-10 s to start) with Iceberg's Spark runtime and
    the JDBC drivers: no UI, nothing fetched, loopback. Each engine opens its own session
    on it (its catalogs: each test has its own catalog database)."""
    pytest.importorskip("pyspark", reason="the spark engine tests need pyspark (dev extra)")
    from pyspark.sql import SparkSession

    from ingestions.engines.spark import sessions as spark_engine

    # Python workers (Arrow UDFs) must run this interpreter, whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    jars = [spark_engine.iceberg_runtime_jar(), *spark_engine.JDBC_DRIVER_JARS.values()]
    missing = [str(jar) for jar in jars if not jar.exists()]
    assert not missing, f"missing jars {missing}: run scripts/ensure_spark_jars.sh"
    spark = (
        SparkSession.builder.master(SPARK_TEST_MASTER)
        .appName("autoloader-tests")
        .config("spark.jars", ",".join(str(jar) for jar in jars))
        .config("spark.sql.extensions", spark_engine.ICEBERG_EXTENSIONS)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    assert not spark.conf.get("spark.jars.packages", ""), "tests must never fetch jars"
    spark.sparkContext.setLogLevel("ERROR")
    with spark_engine._sessions_lock:
        spark_engine._contexts[(os.getpid(), SPARK_TEST_MASTER)] = spark
    yield spark
    with spark_engine._sessions_lock:
        spark_engine._contexts.clear()
        spark_engine._sessions.clear()
    spark.stop()


@pytest.fixture
def spark_settings(spark_session, settings):
    """The spark engine of the product's settings: local[2], the embedded engine's catalog."""
    settings.AUTOLOADER_SPARK_MASTER = SPARK_TEST_MASTER
    settings.AUTOLOADER_SPARK_CATALOG = ""
    settings.AUTOLOADER_SPARK_CONF = {}
    return settings


# --- PostgreSQL: an Iceberg SQL catalog in its own database ------------------------------


def postgres_or_skip() -> dict:
    """The test database's connection settings; skips unless the suite runs on PostgreSQL."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (the CI's second pass: scripts/with_postgres.sh)")
    return connection.settings_dict


@pytest.fixture
def postgres_catalog_uri(db):
    """A PostgreSQL database of its own for a pyiceberg SQL catalog; dropped afterwards."""
    import psycopg

    database = postgres_or_skip()
    name = f"iceberg_catalog_{uuid.uuid4().hex[:10]}"
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    server = f"{credentials}@{database['HOST']}:{database['PORT']}"
    with psycopg.connect(f"postgresql://{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{server}/{name}"
    finally:
        from ingestions.engines.iceberg import catalog as iceberg

        # The engine caches its catalog (and connection pool) per process: release it.
        for key in [key for key in iceberg._catalogs if name in key[2]]:
            iceberg._catalogs.pop(key).engine.dispose()
        with psycopg.connect(f"postgresql://{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(tmp_path):
    """The embedded engine on a catalog and warehouse of the test's own (no Django settings):
    engine-level tests of commits (a test module may define its own `engine`)."""
    from ingestions.engines.iceberg import IcebergEngine

    return IcebergEngine(
        catalog_name="test",
        catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=(tmp_path / "warehouse").as_uri(),
    )
