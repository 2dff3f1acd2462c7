//! `pipeforge serve` as an attacker sees it: the real binary on loopback (`--local-queue
//! --render-only`), real git origins in a temp dir, and requests that try to read files outside
//! the checkout, exhaust the server, replay old merges, or reach another repository's jobs.
//! Memory bounds are read from the server's `/proc/<pid>/status` (`VmRSS`, `VmHWM`).

mod webhook_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use webhook_support::*;

const WAIT: Duration = Duration::from_secs(120);

struct World {
    dir: tempfile::TempDir,
    base: PathBuf,
    org: PathBuf,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("git");
    std::fs::create_dir_all(&base).expect("mkdir");
    let org = org_file(dir.path(), &base);
    World { dir, base, org }
}

impl World {
    /// `serve --local-queue --render-only` with `extra` options and environment.
    fn serve(&self, extra: &[&str], env: &[(String, String)]) -> Serve {
        let work = self.dir.path().join("work");
        let mut args = vec![
            "--local-queue",
            "--render-only",
            "--org",
            self.org.to_str().expect("utf-8"),
            "--work-dir",
            work.to_str().expect("utf-8"),
        ];
        args.extend(extra);
        Serve::start(&args, env)
    }
}

fn manifest(name: &str, min: u32) -> String {
    example_manifest()
        .replace("name: orders-api", &format!("name: {name}"))
        .replace("coverage_min: 85", &format!("coverage_min: {min}"))
}

/// Everything the server said: answers given, its logs, and the statuses read.
fn everything(s: &Serve, answers: &[&Json]) -> String {
    let mut text = serde_json::to_string(&s.logs()).expect("logs");
    for a in answers {
        text.push_str(&a.to_string());
    }
    text
}

// ---------------------------------------------------------------------------------------------
// 1. File disclosure through a symlinked manifest

#[test]
fn a_symlinked_manifest_is_never_read_and_nothing_it_points_to_is_shown() {
    let w = world();
    // A "secret" next to the work directory: `../../secret.txt` from a checkout reaches it.
    let secret = w.dir.path().join("secret.txt");
    std::fs::write(&secret, "token: FAKE-SECRET-7f3a9c\n").expect("write secret");
    let canary = "CANARY-ENV-51c2e8";
    let s = w.serve(&[], &[("PF_TEST_CANARY".to_owned(), canary.to_owned())]);
    let repo = Repo::new(&w.base, "payments", "leaky-app", &manifest("leaky", 85));
    let targets = [
        secret.display().to_string(),
        "../../secret.txt".to_owned(),
        "/proc/self/environ".to_owned(),
        "/etc/passwd".to_owned(),
    ];
    let mut seen = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let commit = repo.merge_change(&format!("link-{i}"), "main", |wt| {
            let m = wt.join("pipeline.yml");
            let _ = std::fs::remove_file(&m);
            std::os::unix::fs::symlink(target, &m).expect("symlink");
        });
        let answer = post_github(
            s.addr,
            &github_payload(&repo, &commit, "main", "main"),
            &format!("leak-{i}"),
        );
        let job = queued_job(&answer);
        let status = s.wait_final(&job.url, WAIT);
        assert_eq!(status["state"], "failed", "{target}: {status:#}");
        let error = status["error"].as_str().unwrap_or_default();
        assert!(error.contains("is a symlink"), "{target}: {error}");
        seen.push(answer.body);
        seen.push(status);
    }
    let said = everything(&s, &seen.iter().collect::<Vec<_>>());
    for leaked in ["FAKE-SECRET", canary, SECRET, "root:x:0"] {
        assert!(!said.contains(leaked), "`{leaked}` was shown:\n{said}");
    }
}

#[test]
fn a_manifest_over_256_kib_is_refused_before_it_is_read() {
    let w = world();
    let s = w.serve(&[], &[]);
    let repo = Repo::new(&w.base, "payments", "big-app", &manifest("big", 85));
    let huge = format!("{}# {}\n", manifest("big", 86), "x".repeat(1024 * 1024));
    let commit = repo.merge("huge", "main", &huge);
    let job = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &commit, "main", "main"),
        "big-1",
    ));
    let status = s.wait_final(&job.url, WAIT);
    assert_eq!(status["state"], "failed", "{status:#}");
    assert!(
        status["error"]
            .as_str()
            .unwrap_or_default()
            .contains("over the limit of 262144 bytes"),
        "{status:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Connection exhaustion

/// Reads until the server closes the connection (or `limit` passes): the time it took and the
/// answer's status line, if any.
fn until_closed(mut s: TcpStream, limit: Duration) -> (Duration, String) {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    (
        started.elapsed(),
        text.lines().next().unwrap_or_default().to_owned(),
    )
}

fn healthz_ms(s: &Serve) -> u128 {
    let t = Instant::now();
    let a = request(s.addr, "GET", "/healthz", &[], b"");
    assert_eq!(a.status, 200, "{:?}", a.body);
    t.elapsed().as_millis()
}

#[test]
fn a_trickling_client_is_cut_off_at_the_header_timeout_while_healthz_answers() {
    let w = world();
    let s = w.serve(
        &[
            "--header-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "2",
            "--body-timeout-secs",
            "2",
        ],
        &[],
    );
    // One byte of header every 200 ms, forever.
    let addr = s.addr;
    let trickle = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).expect("connect");
        let started = Instant::now();
        c.write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .expect("head");
        while started.elapsed() < Duration::from_secs(30) {
            if c.write_all(b"a").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            let mut probe = [0u8; 1];
            c.set_nonblocking(true).expect("nonblocking");
            let closed = matches!(c.read(&mut probe), Ok(0));
            c.set_nonblocking(false).expect("blocking");
            if closed {
                break;
            }
        }
        started.elapsed()
    });
    // Idle connections that never send anything.
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(s.addr).expect("connect"))
        .collect();
    // A body announced but never sent.
    let mut slow_body = TcpStream::connect(s.addr).expect("connect");
    slow_body
        .write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .expect("head");
    for _ in 0..5 {
        assert!(
            healthz_ms(&s) < 2000,
            "healthz answers while clients trickle"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let cut = trickle.join().expect("trickle");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(6),
        "the trickling client was cut off after {cut:?} (header timeout 2 s)"
    );
    for c in idle {
        let (t, line) = until_closed(c, Duration::from_secs(10));
        assert!(t < Duration::from_secs(6), "idle connection kept {t:?}");
        assert!(line.is_empty(), "no answer to a silent client: {line}");
    }
    let (t, line) = until_closed(slow_body, Duration::from_secs(10));
    assert!(line.contains(" 408 "), "{line}");
    assert!(t < Duration::from_secs(6), "{t:?}");
    assert!(healthz_ms(&s) < 2000);
}

#[test]
fn connections_over_the_limit_are_closed_at_once_and_the_server_recovers() {
    let w = world();
    let s = w.serve(
        &[
            "--max-connections",
            "8",
            "--header-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "2",
        ],
        &[],
    );
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(s.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let extra = TcpStream::connect(s.addr).expect("the kernel accepts");
    let (t, line) = until_closed(extra, Duration::from_secs(5));
    assert!(
        t < Duration::from_secs(1) && line.is_empty(),
        "over the limit: closed at once, no answer ({t:?}, {line:?})"
    );
    // The held connections time out; then the server answers again.
    std::thread::sleep(Duration::from_secs(3));
    drop(held);
    assert!(healthz_ms(&s) < 2000);
    assert!(
        !s.events("connection limit reached: connections closed at once")
            .is_empty(),
        "{:#?}",
        s.logs()
    );
}

#[test]
fn three_hundred_partial_one_mib_bodies_keep_memory_bounded() {
    const BOUND_MIB: u64 = 96;
    let w = world();
    let mut s = w.serve(&["--body-timeout-secs", "4"], &[]);
    std::thread::sleep(Duration::from_millis(500));
    let (base, _) = s.memory_kib();
    let head = "POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: pull_request\r\n\
                X-Hub-Signature-256: sha256=00\r\nContent-Length: 1048576\r\n\r\n";
    let chunk = vec![b'{'; 64 * 1024];
    let mut clients: Vec<(TcpStream, usize)> = (0..300)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).expect("connect");
            c.write_all(head.as_bytes()).expect("head");
            c.set_nonblocking(true).expect("nonblocking");
            (c, 0)
        })
        .collect();
    // Push all but the last byte of every body, as fast as the server takes it, for 6 s.
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(6) {
        for (c, sent) in &mut clients {
            let left = (1024 * 1024 - 1) - *sent;
            if left == 0 {
                continue;
            }
            if let Ok(n) = c.write(&chunk[..left.min(chunk.len())]) {
                *sent += n;
            }
        }
        peak = peak.max(s.memory_kib().1);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, hwm) = s.memory_kib();
    let grew = hwm.max(peak).saturating_sub(base) / 1024;
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "300 partial 1 MiB bodies: RSS {} MiB at start, peak {} MiB (+{grew} MiB; bound +{BOUND_MIB} MiB)",
            base / 1024,
            hwm / 1024
        );
    }
    assert!(
        grew < BOUND_MIB,
        "peak RSS grew by {grew} MiB (bound {BOUND_MIB} MiB)"
    );
    drop(clients);
    assert!(s.running(), "the server is still up");
    assert!(healthz_ms(&s) < 2000);
}

// ---------------------------------------------------------------------------------------------
// 3. Alias amplification

#[test]
fn an_alias_bomb_fails_cleanly_within_a_memory_bound() {
    const BOUND_MIB: u64 = 64;
    let w = world();
    let s = w.serve(&[], &[]);
    std::thread::sleep(Duration::from_millis(500));
    let (base, _) = s.memory_kib();
    let repo = Repo::new(&w.base, "payments", "bomb-app", &manifest("bomb", 85));
    // 200 KiB anchored once, aliased 1,000 times: a 206 KiB file that expands to 200 MiB.
    let mut bomb = format!(
        "{}x-big: &big {}\nx-many: [",
        manifest("bomb", 85),
        "b".repeat(200 * 1024)
    );
    bomb.push_str(&vec!["*big"; 1000].join(","));
    bomb.push_str("]\n");
    assert!(bomb.len() < 256 * 1024);
    let commit = repo.merge("bomb", "main", &bomb);
    let job = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &commit, "main", "main"),
        "bomb-1",
    ));
    let status = s.wait_final(&job.url, WAIT);
    let (_, hwm) = s.memory_kib();
    let grew = hwm.saturating_sub(base) / 1024;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("alias bomb: peak RSS +{grew} MiB (bound +{BOUND_MIB} MiB)");
    }
    assert!(grew < BOUND_MIB, "peak RSS grew by {grew} MiB");
    assert_eq!(status["state"], "failed", "{status:#}");
    assert!(
        status.to_string().contains("more than 4 MiB of text"),
        "{status:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Replays and rollbacks

#[test]
fn a_replayed_older_merge_is_superseded_and_never_deploys_github_and_bitbucket() {
    let w = world();
    let s = w.serve(&[], &[]);
    let repo = Repo::new(&w.base, "payments", "replay-app", &manifest("replay", 85));
    let m1 = repo.merge("pr-1", "main", &manifest("replay", 86));
    let m2 = repo.merge("pr-2", "main", &manifest("replay", 90));
    let first = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &m1, "main", "main"),
        "gh-1",
    ));
    assert_eq!(s.wait_final(&first.url, WAIT)["state"], "succeeded");
    let second = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &m2, "main", "main"),
        "gh-2",
    ));
    assert_eq!(s.wait_final(&second.url, WAIT)["state"], "succeeded");
    // Someone who saw the first webhook sends its body again, under a new delivery id.
    let replay = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &m1, "main", "main"),
        "gh-replayed",
    ));
    let st = s.wait_final(&replay.url, WAIT);
    assert_eq!(st["state"], "superseded", "{st:#}");
    assert!(st["superseded_by"].to_string().contains(&m2), "{st:#}");
    // The newest merge sent again: already deployed.
    let again = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &m2, "main", "main"),
        "gh-again",
    ));
    assert_eq!(s.wait_final(&again.url, WAIT)["state"], "duplicate");
    // Bitbucket Data Center alike.
    let bb = queued_job(&post_bitbucket_server(
        s.addr,
        &bitbucket_server_payload(&repo, &m1, "main"),
        "bb-replayed",
    ));
    assert_eq!(s.wait_final(&bb.url, WAIT)["state"], "superseded");
    let succeeded: Vec<String> = s
        .events("job succeeded")
        .iter()
        .filter_map(|e| e["commit"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        succeeded,
        [m1.clone(), m2.clone()],
        "only the two merges deployed"
    );
    // A newer merge still deploys.
    let m3 = repo.merge("pr-3", "main", &manifest("replay", 91));
    let third = queued_job(&post_bitbucket_server(
        s.addr,
        &bitbucket_server_payload(&repo, &m3, "main"),
        "bb-3",
    ));
    assert_eq!(s.wait_final(&third.url, WAIT)["state"], "succeeded");
}

// ---------------------------------------------------------------------------------------------
// 5. Statuses: capability URLs, bounded sizes

#[test]
fn a_status_is_read_only_through_its_capability_url_and_is_size_capped() {
    let w = world();
    let s = w.serve(&[], &[]);
    let repo = Repo::new(&w.base, "payments", "noisy-app", &manifest("noisy", 85));
    // A manifest with thousands of long problems.
    let mut noisy = manifest("noisy", 85);
    for i in 0..2_000 {
        noisy.push_str(&format!("unknown_{i}_{}: 1\n", "k".repeat(80)));
    }
    assert!(noisy.len() < 256 * 1024);
    let commit = repo.merge("noisy", "main", &noisy);
    let answer = post_github(
        s.addr,
        &github_payload(&repo, &commit, "main", "main"),
        "noisy-1",
    );
    let job = queued_job(&answer);
    let status = s.wait_final(&job.url, WAIT);
    assert_eq!(status["state"], "failed");
    let size = status.to_string().len();
    assert!(size <= 64 * 1024, "status of {size} bytes");
    assert!(
        status["diagnostics"].as_array().expect("diagnostics").len() <= 16,
        "{status:#}"
    );
    assert!(status.get("capability").is_none(), "{status:#}");
    // Without the capability, or with another one, there is no such job.
    let capability = job.url.rsplit('/').next().expect("capability");
    let mut wrong = capability.to_owned();
    wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
    for url in [
        format!("/jobs/{}", job.id),
        format!("/jobs/{}/{wrong}", job.id),
        format!("/jobs/{}/{}", job.id, "0".repeat(64)),
        format!("/jobs/{}/", job.id),
    ] {
        let a = request(s.addr, "GET", &url, &[], b"");
        assert_eq!(a.status, 404, "{url}: {:?}", a.body);
    }
    assert!(
        !serde_json::to_string(&s.logs())
            .expect("logs")
            .contains(capability),
        "the capability is never logged"
    );
}

#[test]
fn huge_signed_fields_are_refused_and_never_echoed() {
    let w = world();
    let s = w.serve(&[], &[]);
    let repo = Repo::new(&w.base, "payments", "fields-app", &manifest("fields", 85));
    let commit = repo.merge("x", "main", &manifest("fields", 86));
    let huge = "z".repeat(500 * 1024);
    let base: Json =
        serde_json::from_slice(&github_payload(&repo, &commit, "main", "main")).expect("json");
    for (pointer, value) in [
        ("/pull_request/base/ref", json!(huge)),
        ("/repository/full_name", json!(format!("payments/{huge}"))),
        ("/repository/default_branch", json!(huge)),
        ("/action", json!(huge)),
        ("/repository/clone_url", json!(format!("/{huge}"))),
    ] {
        let mut v = base.clone();
        *v.pointer_mut(pointer).expect(pointer) = value;
        let a = post_github(s.addr, &serde_json::to_vec(&v).expect("encode"), "huge-1");
        let text = a.body.to_string();
        assert!(text.len() < 1024, "{pointer}: {} bytes echoed", text.len());
        assert!(
            a.status == 400 || (a.status == 202 && a.body["status"] == "ignored"),
            "{pointer}: {} {text}",
            a.status
        );
    }
    let body = github_payload(&repo, &commit, "main", "main");
    let a = post_github(s.addr, &body, &"d".repeat(2000));
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(a.body.to_string().len() < 1024);
    assert!(s.events("job started").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. Clone URLs

#[test]
fn clone_urls_that_only_end_with_the_repository_or_leave_the_prefix_are_refused() {
    let w = world();
    let s = w.serve(&[], &[]);
    let repo = Repo::new(&w.base, "payments", "url-app", &manifest("url", 85));
    let commit = repo.merge("x", "main", &manifest("url", 86));
    // An attacker's copy at `<prefix>/attacker/payments/url-app.git`, and a symlinked
    // directory under the prefix that leads out of it.
    let evil = Repo::new(
        &w.base.join("attacker"),
        "payments",
        "url-app",
        &manifest("url", 85),
    );
    let outside = w.dir.path().join("outside");
    let outside_repo = Repo::new(&outside, "payments", "url-app", &manifest("url", 85));
    std::os::unix::fs::symlink(&outside, w.base.join("jump")).expect("symlink");
    let payload = |url: &str| {
        let mut v: Json =
            serde_json::from_slice(&github_payload(&repo, &commit, "main", "main")).expect("json");
        v["repository"]["clone_url"] = json!(url);
        serde_json::to_vec(&v).expect("encode")
    };
    for url in [
        evil.origin.display().to_string(),
        format!("{}/jump/payments/url-app.git", w.base.display()),
        "https://github.com/attacker/payments/url-app.git".to_owned(),
        "https://github.com/payments/url-app.git/../../attacker/x.git".to_owned(),
    ] {
        let a = post_github(s.addr, &payload(&url), "url-1");
        assert_eq!(a.status, 403, "{url}: {:?}", a.body);
    }
    assert!(outside_repo.origin.exists());
    // The repository's own origin is accepted.
    queued_job(&post_github(
        s.addr,
        &payload(&repo.origin.display().to_string()),
        "url-2",
    ));
}

// ---------------------------------------------------------------------------------------------
// 7. Job ids

#[test]
fn a_delivery_id_never_shadows_another_repositorys_job() {
    let w = world();
    let s = w.serve(&[], &[]);
    let a = Repo::new(&w.base, "payments", "id-a", &manifest("ida", 85));
    let b = Repo::new(&w.base, "payments", "id-b", &manifest("idb", 85));
    let ca = a.merge("x", "main", &manifest("ida", 86));
    let cb = b.merge("x", "main", &manifest("idb", 86));
    let ja = queued_job(&post_github(
        s.addr,
        &github_payload(&a, &ca, "main", "main"),
        "Delivery-1",
    ));
    // The same delivery id for another repository, and in another case: new jobs.
    let jb = queued_job(&post_github(
        s.addr,
        &github_payload(&b, &cb, "main", "main"),
        "Delivery-1",
    ));
    assert_ne!(ja.id, jb.id);
    let jb2 = queued_job(&post_github(
        s.addr,
        &github_payload(&b, &cb, "main", "main"),
        "delivery-1",
    ));
    assert_ne!(jb.id, jb2.id);
    assert_eq!(s.wait_final(&jb.url, WAIT)["repository"], "payments/id-b");
    assert_eq!(s.wait_final(&ja.url, WAIT)["repository"], "payments/id-a");
    // Only a redelivery of the same repository's delivery is a duplicate.
    let again = post_github(
        s.addr,
        &github_payload(&a, &ca, "main", "main"),
        "Delivery-1",
    );
    assert_eq!(again.body["status"], "duplicate", "{:?}", again.body);
    assert_eq!(again.body["job"], ja.id.as_str());
}
