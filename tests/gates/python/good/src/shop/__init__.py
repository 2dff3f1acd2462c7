"""Prices and baskets."""

from shop.basket import Basket

__all__ = ["Basket"]
