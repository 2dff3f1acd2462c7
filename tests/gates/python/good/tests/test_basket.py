import pytest

from shop import Basket


def test_total_adds_prices():
    b = Basket()
    b.add("tea", 250)
    b.add("tea", 250)
    b.add("cake", 300)
    assert b.total() == 800


def test_negative_prices_are_refused():
    with pytest.raises(ValueError):
        Basket().add("gift", -1)
