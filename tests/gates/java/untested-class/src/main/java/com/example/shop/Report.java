package com.example.shop;

import java.util.ArrayList;
import java.util.List;

/** A sales report that no test exercises. */
public final class Report {
  private final List<String> lines = new ArrayList<>();

  /**
   * Adds a line for one sale.
   *
   * @param item what was sold
   * @param cents its price in cents
   */
  public void sale(String item, long cents) {
    if (item.isEmpty()) {
      throw new IllegalArgumentException("an item needs a name");
    }
    String price = cents / 100 + "." + String.format("%02d", cents % 100);
    lines.add(item + ": " + price);
  }

  /**
   * The report's text.
   *
   * @return one line per sale, then the number of sales
   */
  public String text() {
    StringBuilder b = new StringBuilder();
    for (String l : lines) {
      b.append(l).append('\n');
    }
    b.append(lines.size()).append(" sales\n");
    return b.toString();
  }
}
