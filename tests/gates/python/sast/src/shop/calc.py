"""Evaluates a price formula."""


def price(formula: str) -> int:
    """The price a formula gives."""
    return int(eval(formula))
