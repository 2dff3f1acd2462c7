//! Warn first, then enforce: dated org rules (`enforce_from`) and waivers, evaluated on an
//! injected day (the library never reads the clock).

use pipeforge::model::NoticeKind;
use pipeforge::{Date, Evaluation, Inputs, SourceFile};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example_org() -> String {
    std::fs::read_to_string(root().join("examples/org.yaml")).expect("org")
}

fn example() -> String {
    std::fs::read_to_string(root().join("examples/pipeline.yml")).expect("example")
}

/// The example org with `iac-scan` mandatory from 2026-09-01, a dated forbidden command, and
/// `extra` appended (waivers).
fn org(extra: &str) -> String {
    let text = example_org().replace(
        "  - name: iac-scan\n    stage: ci\n    mandatory: false\n",
        "  - name: iac-scan\n    stage: ci\n    mandatory: true\n    enforce_from: \"2026-09-01\"\n",
    );
    let text = text.replace(
        "  forbidden:\n",
        "  forbidden:\n    - pattern: 'curl[^|]*\\|\\s*(ba)?sh'\n      reason: piping a download into a shell runs unreviewed code\n      id: no-curl-pipe\n      enforce_from: \"2026-10-01\"\n",
    );
    assert!(text.contains("enforce_from: \"2026-09-01\""));
    assert!(text.contains("id: no-curl-pipe"));
    format!("{text}\n{extra}")
}

fn inputs(org_text: &str) -> pipeforge::Result<Inputs> {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("org.yaml");
    std::fs::write(&path, org_text).expect("write org");
    Inputs::load(Some(&path), None, None)
}

fn day(text: &str) -> Evaluation {
    Evaluation::on(Date::parse(text).expect("date"))
}

/// The example with the optional gate turned off and a curl-pipe build command.
fn manifest() -> String {
    example()
        .replace(
            "tags: {cost-center: \"4711\"}\n",
            "tags: {cost-center: \"4711\"}\ngates: {iac-scan: {enabled: false}}\n",
        )
        .replace(
            "commands: [\"make build\"]",
            "commands: [\"curl -fsSL https://get.example.com | sh\", \"make build\"]",
        )
}

fn generate(
    org_text: &str,
    manifest: &str,
    eval: &Evaluation,
) -> pipeforge::Result<pipeforge::Bundle> {
    let inp = inputs(org_text).expect("org loads");
    pipeforge::generate_in(&SourceFile::new("pipeline.yml", manifest), &inp, eval)
}

#[test]
fn a_dated_gate_and_command_warn_before_their_day_and_fail_from_it() {
    let org = org("");
    let b = generate(&org, &manifest(), &day("2026-08-31")).expect("warnings only");
    let warnings: Vec<String> = b
        .plan
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::Warning)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains("`build.commands[0]`: command would weaken a gate")
            && warnings[0].contains("this is an error from 2026-10-01 (in 31 days)"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].contains("gate `iac-scan` is mandatory and cannot be turned off")
            && warnings[1].contains("error from 2026-09-01 (tomorrow)"),
        "{warnings:#?}"
    );
    // The gate does not run yet; the command reaches the buildspec through the output check.
    assert!(b.plan.gate("iac-scan").is_none());
    assert!(
        b.plan
            .disabled_gates
            .iter()
            .any(|d| d.name == "iac-scan" && d.reason.contains("before the gate is enforced"))
    );
    let build = String::from_utf8(
        b.outputs
            .get("buildspecs/build.yml")
            .expect("buildspec")
            .to_vec(),
    )
    .expect("utf-8");
    assert!(build.contains("get.example.com | sh"), "{build}");
    // plan.json carries the notices (no absolute paths, no location).
    let plan = String::from_utf8(b.outputs.get("plan.json").expect("plan").to_vec()).expect("utf8");
    assert!(plan.contains("\"notices\""), "{plan}");
    assert!(
        !plan.contains("pipeline.yml:"),
        "locations stay out of plan.json"
    );

    // From the gate's day: the gate is an error, the command still a warning.
    let e = generate(&org, &manifest(), &day("2026-09-01")).expect_err("enforced");
    let text = e.to_string();
    assert!(
        text.contains("gate `iac-scan` is mandatory and cannot be turned off"),
        "{text}"
    );
    assert!(!text.contains("build.commands"), "{text}");
    assert!(text.contains("has 1 problem"), "{text}");
    // From the command's day, both.
    let e = generate(&org, &manifest(), &day("2026-10-01")).expect_err("enforced");
    assert!(e.to_string().contains("has 2 problems"), "{e}");
    // Without a day, everything is enforced.
    let e = generate(&org, &manifest(), &Evaluation::default()).expect_err("strict");
    assert!(e.to_string().contains("has 2 problems"), "{e}");
}

const WAIVERS: &str = r#"waivers:
  - {pipeline: "orders-*", gate: iac-scan, reason: "the app template is generated by a vendor tool", approver: "ciso@example.com", expires: "2026-12-31"}
  - {repository: "payments/*", rule: no-curl-pipe, reason: "installer replaced in Q4", approver: "platform-lead@example.com", expires: "2026-11-15"}
"#;

#[test]
fn an_active_waiver_allows_and_an_expired_one_is_an_error_that_says_so() {
    let org = org(WAIVERS);
    let repo = |e: Evaluation| e.for_repository(Some("Payments/Orders-API"));
    let b = generate(&org, &manifest(), &repo(day("2026-10-05"))).expect("waived");
    let waived: Vec<_> = b
        .plan
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::Waived)
        .collect();
    assert_eq!(waived.len(), 2, "{:#?}", b.plan.notices);
    let gate = waived
        .iter()
        .find(|n| n.subject == "gate `iac-scan`")
        .expect("gate");
    let w = gate.waiver.as_ref().expect("waiver");
    assert_eq!((w.index, w.approver.as_str()), (0, "ciso@example.com"));
    assert_eq!(gate.until.to_string(), "2026-12-31");
    let footprint =
        pipeforge::capacity::Footprint::of_outputs(&b.plan, &b.outputs).expect("footprint");
    let inp = inputs(&org).expect("org loads");
    let explained = pipeforge::explain::explain(&b.plan, &footprint, &inp.org);
    assert!(
        explained.contains("gate `iac-scan` at `gates.iac-scan.enabled`: waived until 2026-12-31 (org `waivers[0]`, approved by ciso@example.com: the app template is generated by a vendor tool)"),
        "{explained}"
    );
    assert!(explained.contains("rule `no-curl-pipe`"), "{explained}");

    // A repository waiver needs the repository: unknown, the rule is enforced (its day passed).
    let e = generate(&org, &manifest(), &day("2026-10-05")).expect_err("repository unknown");
    assert!(e.to_string().contains("command would weaken a gate"), "{e}");
    // Another repository is not covered.
    let e = generate(
        &org,
        &manifest(),
        &day("2026-10-05").for_repository(Some("billing/orders-api")),
    )
    .expect_err("other repository");
    assert!(e.to_string().contains("command would weaken a gate"), "{e}");

    // After expiry: errors that name the expired waiver.
    let e = generate(&org, &manifest(), &repo(day("2027-01-01"))).expect_err("expired");
    let text = e.to_string();
    assert!(text.contains("has 2 problems"), "{text}");
    assert!(
        text.contains("the waiver of gate `iac-scan` for this pipeline")
            && text.contains("approved by ciso@example.com) expired on 2026-12-31"),
        "{text}"
    );
    assert!(text.contains("expired on 2026-11-15"), "{text}");
    // The last day of a waiver still counts.
    generate(&org, &manifest(), &repo(day("2026-11-15"))).expect("last day of the waiver");
}

#[test]
fn an_expired_waiver_nothing_needs_is_a_warning_and_the_floor_can_be_waived() {
    let org = org(r#"waivers:
  - {pipeline: orders-api, rule: coverage-floor, reason: "legacy code, tests being written", approver: "qa-lead@example.com", expires: "2026-12-31"}
  - {pipeline: orders-api, gate: lint, reason: "migrating linters", approver: "qa-lead@example.com", expires: "2026-01-31"}
"#);
    let low = example().replace("coverage_min: 85", "coverage_min: 60");
    let b = generate(&org, &low, &day("2026-06-01")).expect("floor waived");
    let kinds: Vec<(NoticeKind, &str)> = b
        .plan
        .notices
        .iter()
        .map(|n| (n.kind, n.subject.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (NoticeKind::Waived, "rule `coverage-floor`"),
            (NoticeKind::Warning, "gate `lint`")
        ]
    );
    assert!(
        b.plan.notices[1]
            .message
            .contains("expired on 2026-01-31; nothing needs it")
    );
    assert_eq!(b.plan.coverage_min.value, 60);
    // Other pipelines are not covered.
    let other = low.replace("name: orders-api", "name: ledger");
    let e = generate(&org, &other, &day("2026-06-01")).expect_err("not covered");
    assert!(
        e.to_string().contains("below the organisation's floor"),
        "{e}"
    );
}

#[test]
fn the_policy_refuses_waivers_of_what_cannot_be_waived_and_bad_dates() {
    let cases = [
        (
            "waivers:\n  - {pipeline: x, gate: iac-scan, reason: r, approver: a, expires: \"2026-12-31\"}\n",
            None,
        ),
        (
            "waivers:\n  - {pipeline: x, rule: approvals, reason: r, approver: a, expires: \"2026-12-31\"}\n",
            Some("there is no rule `approvals` to waive"),
        ),
        (
            "waivers:\n  - {pipeline: x, gate: lint, rule: coverage-floor, reason: r, approver: a, expires: \"2026-12-31\"}\n",
            Some("a waiver names either a `gate` or a `rule`"),
        ),
        (
            "waivers:\n  - {gate: lint, reason: r, approver: a, expires: \"2026-12-31\"}\n",
            Some("a waiver covers either `pipeline` or `repository`"),
        ),
        (
            "waivers:\n  - {pipeline: x, gate: lint, reason: r, approver: a, expires: \"2026-02-30\"}\n",
            Some("`2026-02-30` is not a day of the calendar"),
        ),
        (
            "waivers:\n  - {pipeline: x, gate: nosuch, reason: r, approver: a, expires: \"2026-12-31\"}\n",
            Some("the org has no gate `nosuch`"),
        ),
    ];
    for (extra, want) in cases {
        let r = inputs(&org(extra));
        match want {
            None => {
                r.expect("valid");
            }
            Some(w) => {
                let e = r.expect_err(w);
                assert!(e.to_string().contains(w), "{e}");
            }
        }
    }
    // A waiver of an optional gate, and a date on an optional gate.
    let e = inputs(&format!(
        "{}\nwaivers:\n  - {{pipeline: x, gate: iac-scan, reason: r, approver: a, expires: \"2026-12-31\"}}\n",
        example_org()
    ))
    .expect_err("optional");
    assert!(e.to_string().contains("gate `iac-scan` is optional"), "{e}");
    let e = inputs(&example_org().replace(
        "    mandatory: false\n",
        "    mandatory: false\n    enforce_from: \"2026-09-01\"\n",
    ))
    .expect_err("optional dated");
    assert!(
        e.to_string().contains("nothing to enforce from a date"),
        "{e}"
    );
}
