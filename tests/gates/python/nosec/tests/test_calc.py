from shop.calc import price


def test_price():
    assert price("2 + 3") == 5
