"""Changed files among many unchanged ones: what noticing 100 corrected files costs (issue 24).

One ingestion over N+100 loaded files of which 100 are then rewritten in place (policy
`reload`): its run finds the 100 among the N unchanged and replaces their rows. The
reference is what that run cannot avoid: a run of an ingestion over the 100 changed files
alone (also reloading them) plus one listing of the N+100 files. The difference is what
the unchanged files cost: the history read and a dict lookup each, no I/O per file. Trials
alternate the contenders so machine noise falls on both. Prints a table and writes
bench/results/changed_files.json.

    .venv/bin/python bench/changed_files.py [--unchanged 10000] [--changed 100] [--trials 3]
"""

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import grant_source, median, print_table, setup_django, temp_dir, timed, write_results

HEADER = "order_id,customer,amount\n"


def write_file(path: Path, index: int, version: int) -> None:
    """A small CSV (3 rows); each `version` has other amounts and a later mtime."""
    rows = "".join(
        f"{index * 3 + row},customer-{index},{(index + row) * 1.25 + version * 100:.2f}\n"
        for row in range(3)
    )
    path.write_text(HEADER + rows)
    if version:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + version * 1_000_000_000))


def make_ingestion(folder: Path, name: str):
    from ingestions.models import Tenant
    from ingestions.services import ingestion_create

    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    grant_source(tenant, folder.as_uri())
    return ingestion_create(
        tenant=tenant,
        actor=None,
        name=name,
        source_uri=folder.as_uri(),
        source_format="csv",
        destination_table=f"raw.{name.replace('-', '_')}",
    )


def run(ingestion, *, expect_changed: int) -> None:
    from ingestions.models import RunStatus
    from ingestions.run_executor import run_execute
    from ingestions.runs import run_request

    done = run_execute(run_id=run_request(ingestion=ingestion).public_id)
    assert done.status == RunStatus.SUCCESS, done.error
    assert done.files_changed == expect_changed, (done.files_changed, expect_changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unchanged", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    work = temp_dir("autoloader-bench-changed-")
    setup_django(work / "product")
    logging.disable(logging.INFO)  # a line per run would bury the table
    from ingestions.locations import source_open
    from ingestions.sources import list_source_files

    total = args.unchanged + args.changed
    # The changed files are spread over the source (every k-th), as corrections are.
    step = total // args.changed
    changed = [index * step for index in range(args.changed)]
    many, few = work / "many", work / "few"
    many.mkdir()
    few.mkdir()
    for index in range(total):
        write_file(many / f"part-{index:06d}.csv", index, 0)
    for index in changed:
        write_file(few / f"part-{index:06d}.csv", index, 0)
    among_many, alone = make_ingestion(many, "among-many"), make_ingestion(few, "alone")
    initial = timed(lambda: run(among_many, expect_changed=0))
    run(alone, expect_changed=0)
    source = source_open(tenant=among_many.tenant, uri=among_many.source_uri)
    assert len(list_source_files(source=source)) == total

    times: dict[str, list[float]] = {"among_many": [], "alone": [], "listing": []}
    for trial in range(1, args.trials + 1):
        for folder in (many, few):
            for index in changed:
                write_file(folder / f"part-{index:06d}.csv", index, trial)
        contenders = [
            ("among_many", lambda: run(among_many, expect_changed=args.changed)),
            ("alone", lambda: run(alone, expect_changed=args.changed)),
            ("listing", lambda: list_source_files(source=source)),
        ]
        if trial % 2 == 0:
            contenders.reverse()
        for name, function in contenders:
            times[name].append(timed(function))

    among_many_s, alone_s, listing_s = (median(times[name]) for name in times)
    reference = alone_s + listing_s
    ratio = among_many_s / reference
    print()
    print_table(
        ["unchanged", "changed", f"run over {total:,} s", "run over the changed s",
         f"listing of {total:,} s", "ratio"],
        [[f"{args.unchanged:,}", args.changed, f"{among_many_s:.3f}", f"{alone_s:.3f}",
          f"{listing_s:.3f}", f"{ratio:.2f}"]],
    )  # fmt: skip
    print("\ntarget: ratio <= 1.2 (no per-file I/O for unchanged files)")
    write_results(
        "changed_files",
        {
            "command": " ".join(sys.argv),
            "unchanged": args.unchanged,
            "changed": args.changed,
            "initial_load_s": initial,
            "seconds": times,
            "ratio": round(ratio, 3),
        },
    )


if __name__ == "__main__":
    main()
