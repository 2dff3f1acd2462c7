from shop import Basket


def test_an_empty_basket_costs_one_cent():
    assert Basket().total() == 1
