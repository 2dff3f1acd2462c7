package com.example.shop;

import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;

/** Shadows java.lang.SuppressWarnings, kept in the class files: SpotBugs honours its name. */
@Retention(RetentionPolicy.CLASS)
public @interface SuppressWarnings {
  /**
   * What to suppress.
   *
   * @return bug patterns
   */
  String[] value();
}
