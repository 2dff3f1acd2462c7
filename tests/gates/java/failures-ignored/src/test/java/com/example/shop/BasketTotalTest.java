package com.example.shop;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class BasketTotalTest {
  @Test
  void anEmptyBasketCostsOneCent() {
    assertEquals(1, new Basket().total());
  }
}
