package com.example.shop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class BasketTest {
  @Test
  void totalAddsThePrices() {
    Basket b = new Basket();
    b.add(250);
    b.add(199);
    assertEquals(449, b.total());
  }

  @Test
  void aNegativePriceIsRefused() {
    assertThrows(IllegalArgumentException.class, () -> new Basket().add(-1));
  }
}
