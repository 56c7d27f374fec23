"""How the product writes numbers for people: counts with thousands separators, sizes in the
decimal units storage bills use. One place, so that a preview, a message and the console
say the same figure the same way."""

NOT_AVAILABLE = "\N{EN DASH}"  # what a missing number shows
SIZE_UNITS = ["bytes", "KB", "MB", "GB", "TB", "PB"]


def thousands(value) -> str:
    """12450000 -> "12,450,000"; None -> a dash."""
    if value is None or value == "":
        return NOT_AVAILABLE
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,}"
    return f"{int(value):,}"


def size(value) -> str:
    """Bytes in decimal units, as storage bills count them: 450_200_000_000 -> "450.2 GB"."""
    if value is None:
        return NOT_AVAILABLE
    amount = float(value)
    for unit in SIZE_UNITS:
        if abs(amount) < 1000 or unit == SIZE_UNITS[-1]:
            break
        amount /= 1000
    if unit == "bytes":
        return f"{int(amount):,} bytes"
    return f"{amount:,.1f} {unit}"


def counted(value, noun: str, plural: str | None = None) -> str:
    """A count with its noun in the right number: (1, "file") -> "1 file",
    (4800, "row") -> "4,800 rows"; irregular plurals are given: (2, "entry", "entries")."""
    many = plural if plural is not None else f"{noun}s"
    return f"{thousands(value)} {noun if value == 1 else many}"
