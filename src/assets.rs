//! Files embedded at build time: templates, the language catalog, the default org policy.

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// The embedded file at `path` (relative to the repository root, `/`-separated).
pub fn get(path: &str) -> Option<&'static str> {
    EMBEDDED
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| EMBEDDED[i].1)
}

/// Every embedded file whose path starts with `prefix`, sorted by path.
pub fn list(prefix: &str) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    EMBEDDED
        .iter()
        .filter(move |(p, _)| p.starts_with(prefix))
        .map(|(p, t)| (*p, *t))
}
