package com.example.shop;

import java.util.ArrayList;
import java.util.List;

/** A shopping basket: prices in cents. */
public final class Basket {
  private final List<Long> prices = new ArrayList<>();

  /**
   * Adds an item.
   *
   * @param cents the item's price in cents, not negative
   */
  public void add(long cents) {
    if (cents < 0) {
      throw new IllegalArgumentException("a price cannot be negative: " + cents);
    }
    prices.add(cents);
  }

  /**
   * The total price.
   *
   * @return the sum of the prices in cents
   */
  public long total() {
    long sum = 0;
    for (long p : prices) {
      sum += p;
    }
    return sum;
  }
}
