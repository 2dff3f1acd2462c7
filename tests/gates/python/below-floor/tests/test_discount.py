from shop import Basket
from shop.discount import coupon


def test_coupon():
    assert coupon("TEN") == 10
    assert Basket().total() == 0
