from shop import Basket
from shop.discount import coupon


def test_coupon_ten():
    assert coupon("TEN") == 10


def test_empty_basket():
    basket = Basket()
    assert basket.total() == 0


def test_one_item():
    basket = Basket()
    basket.add("tea", 1)
    assert basket.total() == 1


def test_two_items():
    basket = Basket()
    basket.add("tea", 1)
    basket.add("cake", 2)
    assert basket.total() == 3


def test_same_item_twice():
    basket = Basket()
    basket.add("tea", 1)
    basket.add("tea", 1)
    assert basket.total() == 2
