"""The spark engine on a real Spark standalone cluster (issue 23).

A master and a worker (2 cores, 2 GB) from the installed pyspark (`spark-class`, nothing
downloaded), on loopback; the product's real worker process (`manage.py autoloader_worker`)
runs spark ingestions on it. What a platform team sharing the cluster needs: the product
gives its cores back once idle, another team's job gets them, and a restarted Spark worker
does not break the next run.
"""

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingestions.models import Run, RunStatus
from ingestions.runs import run_request

from ..factories import IngestionFactory
from ..helpers import rows, start_worker, wait_for, write_csv_files
from .conftest import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

pyspark = pytest.importorskip("pyspark", reason="the cluster tests need pyspark (dev extra)")
SPARK_HOME = Path(pyspark.__file__).parent
PRODUCT_APPLICATION = "autoloader"
IDLE_SECONDS = 3
FINISHED = (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED)

# Another team's job: it needs one core, and fails the test if it gets none in time.
FOREIGN_JOB = """
import sys
from pyspark.sql import SparkSession

spark = (
    SparkSession.builder.master(sys.argv[1]).appName("another-team")
    .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1").config("spark.cores.max", "1")
    .getOrCreate()
)
print("counted", spark.range(1000).count())
spark.stop()
"""


@dataclass
class Cluster:
    master_url: str
    ui_port: int
    folder: Path
    processes: dict

    def state(self) -> dict:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.ui_port}/json/", timeout=10
        ) as response:
            return json.loads(response.read())

    def applications(self, name: str) -> list[dict]:
        return [app for app in self.state()["activeapps"] if app["name"] == name]

    def start_worker(self) -> None:
        self.processes["worker"] = self._start(
            "worker",
            "org.apache.spark.deploy.worker.Worker",
            self.master_url,
            "--host", "127.0.0.1", "--cores", "2", "--memory", "2g",
            "--webui-port", str(free_port()), "--work-dir", str(self.folder / "work"),
        )  # fmt: skip
        wait_for(lambda: self.state()["aliveworkers"] == 1, 60, "the Spark worker")

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the JVM spark-class started
        process.wait(timeout=30)

    def _start(self, name: str, main_class: str, *args: str) -> subprocess.Popen:
        with (self.folder / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), main_class, *args],
                env=spark_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def spark_env() -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        # Executors run this interpreter for Python work (a DataFrame made from a list).
        "PYSPARK_PYTHON": sys.executable,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spark-cluster")
    port, ui_port = free_port(), free_port()
    cluster = Cluster(f"spark://127.0.0.1:{port}", ui_port, folder, {})
    cluster.processes["master"] = cluster._start(
        "master",
        "org.apache.spark.deploy.master.Master",
        "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port),
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(cluster), 60, "the Spark master")
        cluster.start_worker()
        yield cluster
    finally:
        for name in list(cluster.processes):
            cluster.stop(name)


def _answers(cluster: Cluster) -> bool:
    try:
        return cluster.state()["status"] == "ALIVE"
    except OSError:
        return False


def run_to_the_end(ingestion) -> Run:
    run = run_request(ingestion=ingestion)
    return wait_for(
        lambda: (fresh := Run.objects.get(pk=run.pk)).status in FINISHED and fresh,
        180,
        f"run {run.public_id} to end",
    )


def test_the_product_gives_the_cluster_its_cores_back_and_survives_a_worker_restart(
    cluster, tenant, source_dir, tmp_path
):
    write_csv_files(source_dir, files=4, rows=50)
    ingestion = IngestionFactory(
        tenant=tenant, public_id="on-the-cluster", source_uri=str(source_dir), engine="spark"
    )
    worker = start_worker(
        tmp_path / "worker.log",
        AUTOLOADER_SPARK_MASTER=cluster.master_url,
        AUTOLOADER_SPARK_IDLE_SECONDS=str(IDLE_SECONDS),
        AUTOLOADER_SPARK_CONF=json.dumps(
            {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
        ),
        **{key: value for key, value in spark_env().items() if key.startswith(("SPARK", "PY"))},
    )
    try:
        run = run_to_the_end(ingestion)
        assert run.status == RunStatus.SUCCESS, run.error
        assert rows(ingestion) == 200

        # Idle: the worker stops its application, and the cores go back to the cluster.
        wait_for(
            lambda: not cluster.applications(PRODUCT_APPLICATION),
            IDLE_SECONDS + 30,
            "the product's idle application to stop",
        )
        assert cluster.state()["coresused"] == 0
        foreign = subprocess.run(
            [sys.executable, "-c", FOREIGN_JOB, cluster.master_url],
            env=spark_env(),
            capture_output=True,
            text=True,
            timeout=120,  # with no core for it, the job would wait forever
        )
        assert "counted 1000" in foreign.stdout, foreign.stderr[-2000:]

        # The Spark worker restarts (its executors are lost); the next run starts a new
        # application and works, the product's worker untouched.
        cluster.stop("worker")
        cluster.start_worker()
        write_csv_files(source_dir, files=1, rows=50, start=4)
        run = run_to_the_end(ingestion)
        assert run.status == RunStatus.SUCCESS, run.error
        assert rows(ingestion) == 250
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(timeout=60)
