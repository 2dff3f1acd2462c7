"""Discounts."""

from shop.basket import Basket


def discounted(basket: Basket, percent: int) -> int:
    """The total after a discount."""
    if percent < 0 or percent > 100:
        raise ValueError("a discount is a percentage")
    total = basket.total()
    cut = total * percent // 100
    if cut > 1000:
        cut = 1000
    rest = total - cut
    if rest < 0:
        rest = 0
    return rest


def coupon(code: str) -> int:
    """The percent a coupon code gives."""
    table = {"TEN": 10, "TWENTY": 20, "HALF": 50}
    if code not in table:
        raise KeyError(code)
    value = table[code]
    if value > 50:
        value = 50
    return value
