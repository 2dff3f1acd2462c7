//! The bundle's archive: every deploy also writes the rendered files of its bundle (not
//! `plan.json`, not the `input/` and `deploy/` copies) as one zip beside the bundle,
//! `bundle/<hash>.zip`, so a reader that needs several files of one bundle — `fleet plan`
//! diffing a changed pipeline against what is deployed — makes one request instead of one per
//! file.
//!
//! The archive is written with the bundle's rights (the deployers) and is only ever read for
//! what the deploy record already vouches for: [`unpack`] returns a file only when its bytes
//! hash to the record's hash for that path, so a forged or stale archive gives nothing (the
//! reader falls back to the file itself), never other content. Entries are read up to
//! [`MAX_ENTRY`] bytes each.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::outputs::{Outputs, PLAN_FILE, sha256};

/// The most bytes one entry may inflate to (a stack template's limit is 1 MB).
pub const MAX_ENTRY: u64 = 4 * 1024 * 1024;

/// The largest archive a reader fetches: a bundle's files, deflated (a pipeline's stacks and
/// buildspecs are a few hundred kilobytes before compression).
pub const MAX_ARCHIVE: usize = 16 * 1024 * 1024;

/// The archive's key for the bundle under `bundle_prefix` (`…/bundle/<hash>/` →
/// `…/bundle/<hash>.zip`).
pub fn key(bundle_prefix: &str) -> String {
    format!("{}.zip", bundle_prefix.trim_end_matches('/'))
}

/// The archive of `outputs`: every file but `plan.json`, deflated, with fixed times (the same
/// outputs give the same bytes).
pub fn pack(outputs: &Outputs) -> Result<Vec<u8>> {
    zip_of(
        outputs.iter().filter(|(p, _)| *p != PLAN_FILE),
        "the bundle's archive",
    )
}

/// A zip of `files` in the order given, deflated, with fixed times and mode 0644, so the same
/// files give the same bytes; `what` names the zip in the error.
pub fn zip_of<'a>(files: impl Iterator<Item = (&'a str, &'a [u8])>, what: &str) -> Result<Vec<u8>> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::other(
            format!("cannot build {what}: {e}"),
            "this is a pipeforge bug; please report it",
        )
    };
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .last_modified_time(zip::DateTime::default())
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for (path, bytes) in files {
        zip.start_file(path, options).map_err(|e| fail(&e))?;
        zip.write_all(bytes).map_err(|e| fail(&e))?;
    }
    Ok(zip.finish().map_err(|e| fail(&e))?.into_inner())
}

/// The files of `archive` that `wanted` (path → `sha256:<hex>`, as a deploy record holds them)
/// asks for and whose bytes have that hash. Anything else — not an archive, a missing entry, an
/// entry over [`MAX_ENTRY`], other bytes — is left out.
pub fn unpack(archive: &[u8], wanted: &BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(mut zip) = zip::ZipArchive::new(std::io::Cursor::new(archive)) else {
        return out;
    };
    for (path, hash) in wanted {
        let Ok(entry) = zip.by_name(path) else {
            continue;
        };
        // Sized as the entry says (at most the limit), so the read does not grow it in steps.
        let mut bytes = Vec::with_capacity(entry.size().min(MAX_ENTRY) as usize);
        let read = entry.take(MAX_ENTRY + 1).read_to_end(&mut bytes);
        if read.is_ok() && bytes.len() as u64 <= MAX_ENTRY && sha256(&bytes) == *hash {
            out.insert(path.clone(), bytes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> Outputs {
        let mut o = Outputs::default();
        o.insert("buildspecs/lint.yml", b"a\nb\n".to_vec());
        o.insert("stacks/pipeline.json", b"{}\n".to_vec());
        o.insert(PLAN_FILE, b"{\"plan\":1}".to_vec());
        o
    }

    fn wanted(pairs: &[(&str, &[u8])]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(p, b)| ((*p).to_owned(), sha256(b)))
            .collect()
    }

    #[test]
    fn only_files_with_the_recorded_hash_come_back() {
        let zip = pack(&outputs()).expect("pack");
        assert_eq!(zip, pack(&outputs()).expect("pack"), "deterministic");
        let got = unpack(
            &zip,
            &wanted(&[
                ("buildspecs/lint.yml", b"a\nb\n"),
                ("stacks/pipeline.json", b"{\"other\":1}\n"),
                ("buildspecs/test.yml", b""),
                (PLAN_FILE, b"{\"plan\":1}"),
            ]),
        );
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["buildspecs/lint.yml"],
            "another hash, a missing file and plan.json give nothing"
        );
        assert_eq!(got["buildspecs/lint.yml"], b"a\nb\n");
        assert!(unpack(b"not a zip", &wanted(&[("buildspecs/lint.yml", b"a\nb\n")])).is_empty());
        assert_eq!(key("t/p/bundle/abc/"), "t/p/bundle/abc.zip");
    }
}
