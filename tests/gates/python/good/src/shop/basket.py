"""A basket of priced items."""


class Basket:
    """Items and their prices, in cents."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {}

    def add(self, name: str, cents: int) -> None:
        """Adds an item; prices are never negative."""
        if cents < 0:
            raise ValueError("a price is never negative")
        self.items[name] = self.items.get(name, 0) + cents

    def total(self) -> int:
        """The sum of every price."""
        return sum(self.items.values())
