package com.example.shop;

import java.io.IOException;

/** Unpacks uploaded archives. */
public final class Archive {
  private Archive() {}

  /**
   * Unpacks an archive.
   *
   * @param name the archive's file name, as the user sent it
   * @return the running process
   * @throws IOException when the command cannot start
   */
  public static Process extract(String name) throws IOException {
    return Runtime.getRuntime().exec("tar -xf " + name);
  }
}
