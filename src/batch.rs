//! Rendering many manifests in one run (`pipeforge render A.yml B.yml … --out DIR`), streamed:
//! each manifest is read, rendered and written (or compared) by one of a few worker threads and
//! its files dropped at once, so memory stays bounded whatever the number of manifests (only the
//! small validated models are kept, for the checks across manifests).
//!
//! Nothing lands in `DIR/<name>/` unless every manifest renders: each bundle is written into a
//! staging directory inside `DIR`, `.pipeforge-staging-<pid>/<index>/` (a pipeline name
//! starts with a letter, so never names it; made when the first bundle is staged): each
//! directory created once, each file written once. Only when every manifest rendered and the
//! cross-manifest checks passed is each staged bundle renamed into place (a previous
//! `DIR/<name>/` is moved aside and removed with the staging directory; into a fresh
//! directory, one `rename` per bundle). A bundle already in `DIR/<name>/` byte for byte, with
//! no other entry there, is neither staged nor moved ([`Outputs::matches_dir`]): re-rendering
//! an unchanged directory reads it and writes nothing. A failed run removes its staging
//! directory and the directories it created, and leaves `DIR` as it was.
//!
//! Results are gathered by manifest index, so errors and the report come out in the order the
//! manifests were given, however the work was shared between threads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::outputs::{self, Outputs};
use crate::{Evaluation, Inputs, generate_in, read_manifest};

/// What to do with each rendered bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Write it under `DIR/<name>/`.
    Write,
    /// Compare it with `DIR/<name>/` and write nothing.
    Check,
}

/// One rendered pipeline, as reported.
#[derive(Debug)]
pub struct Rendered {
    /// The pipeline's name (its directory under `DIR`).
    pub name: String,
    /// How many files its bundle holds.
    pub files: usize,
}

/// The result of a successful run.
#[derive(Debug)]
pub struct Report {
    /// Every pipeline, in the order its manifest was given.
    pub pipelines: Vec<Rendered>,
    /// In [`Mode::Check`], the unified diff of every difference (`None`: up to date).
    pub diff: Option<String>,
}

/// What a worker keeps of one manifest once its files are written and dropped.
struct Done {
    model: Model,
    files: usize,
    /// The bundle's diff against `DIR` ([`Mode::Check`]).
    diff: Option<String>,
    /// A failure to write the staged bundle ([`Mode::Write`]).
    written: Result<()>,
    /// Whether the bundle was staged (false: nothing to move, e.g. already on disk).
    staged: bool,
}

/// Renders every manifest and writes (or compares) the bundles under `dir`, using up to
/// `threads` threads (at least one; a single manifest renders on the calling thread, with no
/// helper thread: it parses only the templates it renders).
///
/// Errors as the one-at-a-time render reports them: a duplicate pipeline name first, else
/// every manifest's diagnostics in manifest order (then the collisions between manifests).
pub fn render_all(
    manifests: &[PathBuf],
    inputs: &Inputs,
    eval: &Evaluation,
    dir: &Path,
    mode: Mode,
    threads: usize,
) -> Result<Report> {
    let staging = match mode {
        Mode::Write => Some(Staging::create(dir)?),
        Mode::Check => None,
    };
    let results = std::thread::scope(|s| {
        // With several manifests, a second core parses the templates while the first ones are
        // validated and planned (the workers wait for a template only if it is not parsed yet).
        // One manifest parses on its own thread the templates it renders, when it renders
        // them: a helper thread cost more CPU than its overlap saved (ARCHITECTURE.md,
        // "Start-up").
        if threads > 1 && manifests.len() > 1 {
            s.spawn(|| inputs.templates.prepare());
        }
        run_workers(manifests, threads, |i, path, failed| {
            let bundle = read_manifest(path).and_then(|f| generate_in(&f, inputs, eval))?;
            let name = bundle.plan.pipeline.name.as_str();
            let (diff, written, staged) = match &staging {
                // Once a manifest failed nothing will be written: skip the I/O, keep checking.
                Some(_) if failed.load(Ordering::Relaxed) => (None, Ok(()), false),
                // Already on disk, byte for byte: nothing to stage, move or remove.
                Some(s) if !s.fresh() && bundle.outputs.matches_dir(&dir.join(name)) => {
                    (None, Ok(()), false)
                }
                Some(s) => (None, s.stage(i, &bundle.outputs), true),
                None => (
                    outputs::diff_bundles(dir, &[(name, &bundle.outputs)])?,
                    Ok(()),
                    false,
                ),
            };
            Ok(Done {
                files: bundle.outputs.len(),
                model: bundle.model,
                diff,
                written,
                staged,
            })
        })
    });
    let outcome = check_results(manifests, results, inputs);
    match (outcome, staging) {
        (Err(e), Some(s)) => {
            s.abandon();
            Err(e)
        }
        (Err(e), None) => Err(e),
        (Ok(done), Some(s)) => {
            let staged: Vec<(usize, &str)> = done
                .iter()
                .enumerate()
                .filter(|(_, d)| d.staged)
                .map(|(i, d)| (i, d.model.name.as_str()))
                .collect();
            let committed = s.commit(&staged);
            committed.map(|()| report(done))
        }
        (Ok(done), None) => Ok(report(done)),
    }
}

fn report(done: Vec<Done>) -> Report {
    let mut diff = String::new();
    let pipelines = done
        .into_iter()
        .map(|d| {
            diff.push_str(d.diff.as_deref().unwrap_or_default());
            Rendered {
                name: d.model.name,
                files: d.files,
            }
        })
        .collect();
    Report {
        pipelines,
        diff: (!diff.is_empty()).then_some(diff),
    }
}

/// Runs `work` on every manifest from a shared queue on up to `threads` threads; the results
/// come back in manifest order. `work` is told whether some manifest has failed already.
fn run_workers<F>(manifests: &[PathBuf], threads: usize, work: F) -> Vec<Result<Done>>
where
    F: Fn(usize, &Path, &AtomicBool) -> Result<Done> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Result<Done>>>> =
        manifests.iter().map(|_| Mutex::new(None)).collect();
    let worker = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = manifests.get(i) else { break };
            let r = work(i, path, &failed);
            if !r.as_ref().is_ok_and(|d| d.written.is_ok()) {
                failed.store(true, Ordering::Relaxed);
            }
            if let Ok(mut slot) = slots[i].lock() {
                *slot = Some(r);
            }
        }
    };
    let threads = threads.clamp(1, manifests.len().max(1));
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(worker);
            }
        });
    }
    slots
        .into_iter()
        .map(|m| {
            m.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(Error::other(
                    "a render worker stopped before finishing its manifest",
                    "this is a pipeforge bug; please report it",
                ))
            })
        })
        .collect()
}

/// The checks of a many-manifest render, in the order the one-at-a-time render made them.
fn check_results(
    manifests: &[PathBuf],
    results: Vec<Result<Done>>,
    inputs: &Inputs,
) -> Result<Vec<Done>> {
    let mut seen = std::collections::BTreeMap::new();
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for (path, r) in manifests.iter().zip(results) {
        match r {
            Ok(d) => {
                let shown = path.display().to_string();
                if let Some(first) = seen.insert(d.model.name.clone(), shown.clone()) {
                    return Err(Error::DuplicatePipeline {
                        name: d.model.name.clone(),
                        first,
                        second: shown,
                    });
                }
                done.push(d);
            }
            Err(e) => failures.push(e),
        }
    }
    let models: Vec<&Model> = done.iter().map(|d| &d.model).collect();
    let clashes = crate::model::stack_names::collisions(&models, &inputs.org);
    if !clashes.is_empty() {
        failures.push(Error::from(clashes));
    }
    if !failures.is_empty() {
        let mut diags = Vec::new();
        for f in failures {
            match f {
                Error::Invalid(d) => diags.extend(d.0),
                other => return Err(other),
            }
        }
        return Err(Error::from(diags));
    }
    // Write errors come after every manifest's own problems.
    for d in &mut done {
        std::mem::replace(&mut d.written, Ok(()))?;
    }
    Ok(done)
}

/// Writes a bundle into `root`, a directory that does not exist yet: each directory is created
/// once and each file written once, with nothing read or checked first.
fn write_tree(root: &Path, outputs: &Outputs) -> Result<()> {
    let mkdir = |p: &Path| std::fs::create_dir(p).map_err(|e| mkdir_error(p, e));
    mkdir(root)?;
    let mut made: BTreeSet<&str> = BTreeSet::new();
    for (path, bytes) in outputs.iter() {
        // Every ancestor directory of the file, outermost first.
        for (at, _) in path.match_indices('/') {
            let d = &path[..at];
            if made.insert(d) {
                mkdir(&root.join(d))?;
            }
        }
        let target = root.join(path);
        std::fs::write(&target, bytes).map_err(|e| Error::write(&target, e))?;
    }
    Ok(())
}

/// The staging directory of one run, inside the output directory (so renames stay on one
/// file system). It is made when the first bundle is staged: a run whose bundles are all on
/// disk already creates and removes nothing.
struct Staging {
    dir: PathBuf,
    root: PathBuf,
    /// Whether `root` was made (the error, if making it failed), once for all threads.
    made: OnceLock<std::result::Result<(), (std::io::ErrorKind, String)>>,
    /// The directories this run created to hold `dir`, deepest first (removed again, if still
    /// empty, when the run fails: a failed render leaves no trace).
    created: Vec<PathBuf>,
}

/// An error creating a directory of the output.
fn mkdir_error(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        action: "create directory",
        path: p.to_path_buf(),
        source: e,
        help: "check that the output directory is writable".to_owned(),
    }
}

impl Staging {
    fn create(dir: &Path) -> Result<Staging> {
        let root = dir.join(format!(".pipeforge-staging-{}", std::process::id()));
        let created: Vec<PathBuf> = dir
            .ancestors()
            .filter(|d| !d.as_os_str().is_empty())
            .take_while(|d| d.symlink_metadata().is_err())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir).map_err(|e| mkdir_error(dir, e))?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            root,
            made: OnceLock::new(),
            created,
        })
    }

    /// Makes the staging directory, the first time a bundle needs it.
    fn make_root(&self) -> Result<()> {
        let made = self.made.get_or_init(|| {
            // Left over by a run of the same process id that was killed: not ours to keep.
            if self.root.symlink_metadata().is_ok() {
                std::fs::remove_dir_all(&self.root).map_err(|e| (e.kind(), e.to_string()))?;
            }
            std::fs::create_dir(&self.root).map_err(|e| (e.kind(), e.to_string()))
        });
        made.clone()
            .map_err(|(kind, text)| mkdir_error(&self.root, std::io::Error::new(kind, text)))
    }

    /// Writes the bundle of manifest `i` into the staging directory.
    fn stage(&self, i: usize, outputs: &Outputs) -> Result<()> {
        self.make_root()?;
        write_tree(&self.bundle(i), outputs)
    }

    /// True when this run created the output directory (no bundle can be there yet).
    fn fresh(&self) -> bool {
        !self.created.is_empty()
    }

    /// Where the bundle of manifest `i` is staged.
    fn bundle(&self, i: usize) -> PathBuf {
        self.root.join(i.to_string())
    }

    /// Moves each staged bundle to `DIR/<name>/` (`(i, name)`: manifest `i` is pipeline
    /// `name`), replacing what was there, then removes the staging directory and the replaced
    /// bundles.
    fn commit(self, staged: &[(usize, &str)]) -> Result<()> {
        let moved = staged.iter().try_for_each(|&(i, name)| self.swap(i, name));
        self.discard();
        moved
    }

    /// Replaces `DIR/<name>/` with the bundle staged for manifest `i`; on failure, puts the
    /// previous bundle back where it was.
    fn swap(&self, i: usize, name: &str) -> Result<()> {
        let target = self.dir.join(name);
        let bundle = self.bundle(i);
        // Into a fresh directory the first rename is all (no check first: one system call
        // per bundle). It fails when `DIR/<name>` is there (unless an empty directory, which
        // it then simply replaces).
        let first = match std::fs::rename(&bundle, &target) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if target.symlink_metadata().is_err() {
            return Err(Error::write(&target, first));
        }
        let old = self.root.join(format!("old-{i}"));
        std::fs::rename(&target, &old).map_err(|e| Error::write(&target, e))?;
        std::fs::rename(&bundle, &target).map_err(|e| {
            let _ = std::fs::rename(&old, &target);
            Error::write(&target, e)
        })
    }

    /// Removes the staging directory and everything in it (if it was made).
    fn discard(&self) {
        if self.made.get().is_some() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    /// After a failed run: removes the staging directory and the directories the run created.
    fn abandon(self) {
        self.discard();
        for d in &self.created {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, name: &str, team: &str) -> PathBuf {
        let p = dir.join(format!("{name}.yml"));
        let text = std::fs::read_to_string("examples/pipeline.yml")
            .expect("example")
            .replace("name: orders-api", &format!("name: {name}"))
            .replace("team: payments", &format!("team: {team}"));
        std::fs::write(&p, text).expect("write manifest");
        p
    }

    /// Manifests of team `payments` in `dir`, one a name.
    fn manifests(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(|n| manifest(dir, n, "payments")).collect()
    }

    fn inputs() -> Inputs {
        Inputs::load(Some(Path::new("examples/org.yaml")), None, None).expect("inputs")
    }

    /// Renders `m` into `out` (or checks it) with the example org and `threads` threads.
    fn run(m: &[PathBuf], out: &Path, mode: Mode, threads: usize) -> Result<Report> {
        render_all(m, &inputs(), &Evaluation::default(), out, mode, threads)
    }

    /// Every file under `dir`, relative, with its bytes.
    fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).expect("rel").display().to_string();
                    out.push((rel, std::fs::read(&p).expect("read")));
                }
            }
        }
        out.sort();
        out
    }

    /// One manifest starts no helper thread to parse templates ahead: with threads to spare,
    /// it parses exactly the templates it renders (the example has no extra region, so the
    /// region stack stays unparsed; the helper would have parsed it).
    #[test]
    fn one_manifest_parses_only_the_templates_it_renders() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = [manifest(tmp.path(), "a-api", "payments")];
        let inp = inputs();
        let out = tmp.path().join("out");
        render_all(&m, &inp, &Evaluation::default(), &out, Mode::Write, 4).expect("render");
        assert_eq!(
            inp.templates.parsed(),
            [
                crate::render::templates::TEMPLATE_BUILDSPEC,
                crate::render::templates::TEMPLATE_PIPELINE_STACK,
                crate::render::templates::TEMPLATE_TARGET_STACK
            ]
        );
        // Several manifests still share the helper, which parses every render template.
        let m2 = [m[0].clone(), manifest(tmp.path(), "b-api", "payments")];
        let inp2 = inputs();
        render_all(&m2, &inp2, &Evaluation::default(), &out, Mode::Write, 2).expect("render");
        assert!(
            inp2.templates
                .parsed()
                .contains(&crate::render::templates::TEMPLATE_REGION_STACK)
        );
    }

    #[test]
    fn threads_write_the_same_tree_as_one_thread_and_replace_stale_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = manifests(tmp.path(), &["a-api", "b-api", "c-api", "d-api", "e-api"]);
        let (one, many) = (tmp.path().join("one"), tmp.path().join("many"));
        std::fs::create_dir_all(many.join("c-api/buildspecs")).expect("mkdir");
        std::fs::write(many.join("c-api/buildspecs/stale.yml"), "x").expect("stale");
        let r1 = run(&m, &one, Mode::Write, 1).expect("one thread");
        let r4 = run(&m, &many, Mode::Write, 4).expect("four threads");
        let names = |r: &Report| -> Vec<(String, usize)> {
            r.pipelines
                .iter()
                .map(|p| (p.name.clone(), p.files))
                .collect()
        };
        assert_eq!(names(&r1), names(&r4));
        let order: Vec<String> = names(&r4).into_iter().map(|(n, _)| n).collect();
        assert_eq!(order, ["a-api", "b-api", "c-api", "d-api", "e-api"]);
        assert_eq!(tree(&one), tree(&many), "stale file removed, same bytes");
        assert!(tree(&one).len() > 5 * 5, "bundles have files");
        let check = run(&m, &many, Mode::Check, 2).expect("check");
        assert!(check.diff.is_none(), "{:?}", check.diff);
        std::fs::write(many.join("d-api/plan.json"), "{}").expect("edit");
        let check = run(&m, &many, Mode::Check, 2).expect("check");
        assert!(check.diff.expect("differs").contains("a/d-api/plan.json"));
    }

    /// The inode of every file under `dir` (a rewritten file gets a new one).
    fn inodes(dir: &Path) -> Vec<(String, u64)> {
        use std::os::unix::fs::MetadataExt;
        tree(dir)
            .into_iter()
            .map(|(rel, _)| {
                let ino = std::fs::symlink_metadata(dir.join(&rel))
                    .expect("stat")
                    .ino();
                (rel, ino)
            })
            .collect()
    }

    #[test]
    fn unchanged_bundles_are_left_in_place_and_changed_ones_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = manifests(tmp.path(), &["a-api", "b-api", "c-api"]);
        let (want, out) = (tmp.path().join("want"), tmp.path().join("out"));
        run(&m, &want, Mode::Write, 1).expect("reference");
        run(&m, &out, Mode::Write, 2).expect("first");
        let before = inodes(&out);
        run(&m, &out, Mode::Write, 2).expect("again");
        assert_eq!(
            inodes(&out),
            before,
            "an unchanged directory is not rewritten"
        );
        let entries = |d: &Path| std::fs::read_dir(d).expect("read_dir").flatten().count();
        assert_eq!(entries(&out), 3, "no staging directory made");

        // Each way a bundle can differ gets it rewritten, and only it.
        /// A way to make a bundle on disk differ, and its name.
        type Spoil = (&'static str, fn(&Path));
        let spoil: [Spoil; 8] = [
            ("a file owned by another user", |b| {
                use std::os::unix::fs::MetadataExt as _;
                let p = b.join("buildspecs/build.yml");
                let uid = std::fs::metadata(&p).expect("stat").uid();
                // Only root may give a file away; elsewhere a world-writable file stands in.
                if std::os::unix::fs::chown(&p, Some(uid + 1), None).is_err() {
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))
                        .expect("chmod");
                }
            }),
            ("a world-writable file", |b| {
                use std::os::unix::fs::PermissionsExt as _;
                let p = b.join("stacks/pipeline.json");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))
                    .expect("chmod");
            }),
            ("one byte changed, same size", |b| {
                let p = b.join("buildspecs/test.yml");
                let mut bytes = std::fs::read(&p).expect("read");
                bytes[0] ^= 1;
                std::fs::write(&p, bytes).expect("edit");
            }),
            ("an edited file", |b| {
                std::fs::write(b.join("plan.json"), "{}").expect("edit")
            }),
            ("a missing file", |b| {
                std::fs::remove_file(b.join("buildspecs/lint.yml")).expect("rm")
            }),
            ("an extra file", |b| {
                std::fs::write(b.join("stacks/extra.json"), "{}").expect("add")
            }),
            ("an extra empty directory", |b| {
                std::fs::create_dir(b.join("old")).expect("mkdir")
            }),
            ("a symlinked directory", |b| {
                let real = b
                    .parent()
                    .and_then(Path::parent)
                    .expect("tmp")
                    .join("b-stacks");
                std::fs::rename(b.join("stacks"), &real).expect("move");
                std::os::unix::fs::symlink(&real, b.join("stacks")).expect("symlink");
            }),
        ];
        for (what, spoil) in spoil {
            let before = inodes(&out);
            spoil(&out.join("b-api"));
            run(&m, &out, Mode::Write, 2).expect("repair");
            let after = inodes(&out);
            assert!(tree(&out) == tree(&want), "{what}: bundle restored");
            let kept = |b: &str| {
                let pick = |v: &[(String, u64)]| -> Vec<(String, u64)> {
                    v.iter()
                        .filter(|(r, _)| r.starts_with(b))
                        .cloned()
                        .collect()
                };
                pick(&before) == pick(&after)
            };
            assert!(kept("a-api/") && kept("c-api/"), "{what}: others untouched");
            assert!(!kept("b-api/"), "{what}: b-api rewritten");
            assert!(
                std::fs::symlink_metadata(out.join("b-api/stacks")).is_ok_and(|m| m.is_dir()),
                "{what}: a real directory"
            );
            assert_eq!(entries(&out), 3, "{what}: no staging directory left");
        }

        // The bundle directory itself a symlink to an identical bundle: replaced by a real one.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::rename(out.join("c-api"), &elsewhere).expect("move");
        std::os::unix::fs::symlink(&elsewhere, out.join("c-api")).expect("symlink");
        run(&m, &out, Mode::Write, 1).expect("replace symlink");
        assert!(std::fs::symlink_metadata(out.join("c-api")).is_ok_and(|m| m.is_dir()));
        assert_eq!(tree(&out), tree(&want));
        assert_eq!(
            tree(&elsewhere),
            tree(&want.join("c-api")),
            "its target untouched"
        );
    }

    #[test]
    fn a_file_or_an_empty_directory_in_the_way_is_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = manifests(tmp.path(), &["a-api", "b-api", "c-api"]);
        let (want, out) = (tmp.path().join("want"), tmp.path().join("out"));
        run(&m, &want, Mode::Write, 1).expect("fresh");
        std::fs::create_dir_all(out.join("a-api")).expect("empty directory");
        std::fs::write(out.join("b-api"), "a file").expect("file");
        run(&m, &out, Mode::Write, 2).expect("replaced");
        assert_eq!(tree(&want), tree(&out));
        let left: Vec<_> = std::fs::read_dir(&out)
            .expect("read_dir")
            .flatten()
            .collect();
        assert_eq!(left.len(), 3, "no staging directory left: {left:?}");
    }

    #[test]
    fn one_invalid_manifest_writes_nothing_and_errors_keep_manifest_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut m: Vec<PathBuf> = (0..6)
            .map(|i| manifest(tmp.path(), &format!("svc-{i}"), "payments"))
            .collect();
        // Two broken manifests, given in the middle and at the end.
        m[2] = manifest(tmp.path(), "svc-2", "no such team!");
        m[5] = manifest(tmp.path(), "svc-5", "no such team?");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(out.join("svc-0")).expect("mkdir");
        std::fs::write(out.join("svc-0/keep.txt"), "old").expect("old");
        let err = run(&m, &out, Mode::Write, 3)
            .expect_err("invalid")
            .to_string();
        let (a, b) = (err.find("svc-2.yml"), err.find("svc-5.yml"));
        assert!(a.is_some() && a < b, "both reported, in order:\n{err}");
        assert_eq!(
            tree(&out),
            [("svc-0/keep.txt".to_owned(), b"old".to_vec())],
            "nothing written, staging removed"
        );
    }

    #[test]
    fn duplicate_names_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = manifest(tmp.path(), "same-api", "payments");
        let b = tmp.path().join("copy.yml");
        std::fs::copy(&a, &b).expect("copy");
        let out = tmp.path().join("out");
        let out = out.join("nested");
        let err = run(&[a, b], &out, Mode::Write, 2).expect_err("duplicate");
        assert!(matches!(err, Error::DuplicatePipeline { .. }), "{err}");
        assert!(
            !tmp.path().join("out").exists(),
            "the directories the run created are removed"
        );
    }
}
