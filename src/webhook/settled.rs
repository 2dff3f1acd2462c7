//! Merges the worker already knows not to deploy again, per repository: its pipeline's deployed
//! commit (from its own deploys, or the deployed commit it read), and the older merges it found
//! to be ancestors of that commit. A replay of one of them (the same signed body sent again and
//! again under new delivery ids) is then settled without a clone or a render.
//!
//! The memory is conservative: a verdict is kept only while the deployed commit it was made
//! against stays the same, so it never lets a merge deploy that the replay rule would stop, and
//! it stops only a merge commit the worker has seen deployed or superseded. It is bounded (64
//! older merges per repository, 1,024 repositories) and lost on restart, when the durable rule
//! (`source.zip`'s deployed commit, read after a clone) takes over again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::status::JobState;

/// Older merges remembered per repository.
const PER_REPOSITORY: usize = 64;

/// Repositories remembered (the least recently used go first).
const REPOSITORIES: usize = 1024;

#[derive(Debug, Default)]
struct Known {
    /// The pipeline's deployed commit, as the worker last saw it.
    deployed: String,
    /// Merges found to be ancestors of `deployed`, newest last.
    older: VecDeque<String>,
    /// When this repository was last used (a counter).
    used: u64,
}

/// What the worker knows, per repository (its queue group).
#[derive(Debug, Default)]
pub struct Settled {
    known: Mutex<(BTreeMap<String, Known>, u64)>,
}

fn full_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

impl Settled {
    /// What became of `commit` (a full hash; an abbreviated one is never settled here) of
    /// `repository` before, when known: `duplicate` (the deployed commit) or `superseded` (an
    /// ancestor of it), with the deployed commit.
    pub fn lookup(&self, repository: &str, commit: &str) -> Option<(JobState, String)> {
        if !full_hash(commit) {
            return None;
        }
        let commit = commit.to_ascii_lowercase();
        let mut guard = self.known.lock().ok()?;
        let (repos, clock) = &mut *guard;
        *clock += 1;
        let k = repos.get_mut(repository)?;
        k.used = *clock;
        if k.deployed == commit {
            Some((JobState::Duplicate, k.deployed.clone()))
        } else if k.older.contains(&commit) {
            Some((JobState::Superseded, k.deployed.clone()))
        } else {
            None
        }
    }

    /// The pipeline of `repository` has `deployed` as its deployed commit (the worker deployed
    /// it, or read it); verdicts made against another commit are forgotten.
    pub fn deployed(&self, repository: &str, deployed: &str) {
        self.with(repository, |k| {
            let deployed = deployed.to_ascii_lowercase();
            if k.deployed != deployed {
                k.deployed = deployed;
                k.older.clear();
            }
        });
    }

    /// `commit` of `repository` is an ancestor of the deployed commit `deployed`.
    pub fn superseded(&self, repository: &str, commit: &str, deployed: &str) {
        self.deployed(repository, deployed);
        if !full_hash(commit) {
            return;
        }
        self.with(repository, |k| {
            let commit = commit.to_ascii_lowercase();
            if !k.older.contains(&commit) {
                k.older.push_back(commit);
                if k.older.len() > PER_REPOSITORY {
                    k.older.pop_front();
                }
            }
        });
    }

    fn with(&self, repository: &str, f: impl FnOnce(&mut Known)) {
        let Ok(mut guard) = self.known.lock() else {
            return;
        };
        let (repos, clock) = &mut *guard;
        *clock += 1;
        if !repos.contains_key(repository) && repos.len() >= REPOSITORIES {
            let oldest = repos
                .iter()
                .min_by_key(|(_, k)| k.used)
                .map(|(r, _)| r.clone());
            if let Some(r) = oldest {
                repos.remove(&r);
            }
        }
        let k = repos.entry(repository.to_owned()).or_default();
        k.used = *clock;
        f(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";

    #[test]
    fn verdicts_hold_only_against_the_deployed_commit_they_were_made_with() {
        let s = Settled::default();
        assert_eq!(s.lookup("r", A), None);
        s.deployed("r", B);
        s.superseded("r", A, B);
        assert_eq!(s.lookup("r", B), Some((JobState::Duplicate, B.to_owned())));
        assert_eq!(s.lookup("r", A), Some((JobState::Superseded, B.to_owned())));
        assert_eq!(s.lookup("other", B), None, "per repository");
        assert_eq!(
            s.lookup("r", &B[..12]),
            None,
            "abbreviated hashes are not settled here"
        );
        s.deployed("r", C);
        assert_eq!(
            s.lookup("r", A),
            None,
            "checked again against the new commit"
        );
        assert_eq!(s.lookup("r", C), Some((JobState::Duplicate, C.to_owned())));
    }

    #[test]
    fn memory_is_bounded() {
        let s = Settled::default();
        for i in 0..(REPOSITORIES + 10) {
            s.deployed(&format!("r{i}"), A);
        }
        assert_eq!(s.known.lock().expect("lock").0.len(), REPOSITORIES);
        for i in 0..(PER_REPOSITORY + 10) {
            s.superseded("x", &format!("{i:040x}"), B);
        }
        let guard = s.known.lock().expect("lock");
        assert_eq!(guard.0["x"].older.len(), PER_REPOSITORY);
    }
}
