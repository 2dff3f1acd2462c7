"""Sales reports; no test imports this module."""


def summary(totals: list[int]) -> dict[str, int]:
    """Count, sum, smallest and largest total."""
    if not totals:
        return {"count": 0, "sum": 0, "min": 0, "max": 0}
    lowest = totals[0]
    highest = totals[0]
    for t in totals:
        if t < lowest:
            lowest = t
        if t > highest:
            highest = t
    return {"count": len(totals), "sum": sum(totals), "min": lowest, "max": highest}


def best(totals: list[int]) -> int:
    """The largest total."""
    if not totals:
        raise ValueError("no totals")
    return summary(totals)["max"]
