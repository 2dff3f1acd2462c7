package com.example.shop;

import java.util.*;

/** Labels for the shop's prices. */
public final class Labels {
    private Labels() {}

    /**
     * The labels of some prices.
     *
     * @param cents prices in cents
     * @return one label per price
     */
    public static List<String> of(long... cents) {
        List<String> out = new ArrayList<>();
        for (long c : cents) {
            out.add(c / 100 + "." + c % 100);
        }
        return out;
    }
}
