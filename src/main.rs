//! The `pipeforge` command: parses arguments, calls the library, prints, and maps results to
//! exit codes (0 ok, 1 differences found, 2 error). The only place that prints: `run` hands
//! each command to its module (`cli_local`, `cli_version`, `cli_aws`, `cli_fleet`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod cli_aws;
mod cli_check;
mod cli_fleet;
mod cli_local;
mod cli_version;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, ColorChoice, Command, Status};
use pipeforge::error::Result;

/// mimalloc: rendering allocates many small strings and JSON values (see benches/render.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs one command: hands it, with its arguments, to the function that does it.
fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status> {
    match cli.command {
        command @ (Command::Publish(_)
        | Command::Deploy(_)
        | Command::Diff(_)
        | Command::Status { .. }
        | Command::Recover(_)
        | Command::Transfer(_)
        | Command::Move(_)
        | Command::Doctor { .. }) => {
            let _ = err.flush();
            Ok(Status::differs_if(cli_aws::run(command, out)?))
        }
        Command::Fleet { command } => {
            let _ = err.flush();
            Ok(Status::differs_if(cli_fleet::run(command, out)?))
        }
        Command::Validate {
            manifests,
            repository,
            inputs,
        } => cli_local::validate(&manifests, repository.as_deref(), &inputs, err),
        Command::Preview {
            web: true,
            listen,
            inputs,
            ..
        } => cli_local::preview_web(listen, &inputs),
        Command::Preview {
            manifest,
            gate,
            inputs,
            ..
        } => cli_local::preview(manifest, gate.as_deref(), &inputs, out),
        Command::Explain {
            manifest,
            format,
            repository,
            inputs,
        } => cli_local::explain(&manifest, format, repository.as_deref(), &inputs, out, err),
        Command::Render {
            manifests,
            out: dir,
            check,
            inputs,
        } => cli_local::render(&manifests, &dir, check, &inputs, out, err),
        Command::Version { command } => {
            cli_version::run(*command, out, err)?;
            Ok(Status::Ok)
        }
        Command::Run(args) => cli_local::run_gates(&args, out),
        Command::Schema { kind } => cli_local::schema(kind, out),
        Command::Coverage { command } => cli_local::coverage(command, out, err),
        Command::Serve(args) => cli_local::serve(args),
        Command::Bootstrap {
            out: dir,
            check,
            inputs,
        } => cli_local::bootstrap(&dir, check, &inputs, out, err),
        Command::Templates { command } => cli_local::templates(command, out, err),
    }
}

/// Colours `error:`, `help:` and `-->` lines when asked to.
fn paint(text: &str, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    text.lines()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("error:") {
                format!("\x1b[1;31merror:\x1b[0m\x1b[1m{rest}\x1b[0m")
            } else if let Some(idx) = l.find("help:").filter(|i| l[..*i].trim().is_empty()) {
                format!("{}\x1b[1;36mhelp:\x1b[0m{}", &l[..idx], &l[idx + 5..])
            } else if let Some(idx) = l.find("-->").filter(|i| l[..*i].trim().is_empty()) {
                format!("{}\x1b[1;34m-->\x1b[0m{}", &l[..idx], &l[idx + 3..])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns transparent huge pages off for this process; true when they were on before (Linux;
/// elsewhere nothing is done).
fn huge_pages_off() -> bool {
    #[cfg(target_os = "linux")]
    return matches!(
        rustix::thread::transparent_huge_pages_are_disabled(),
        Ok(false)
    ) && rustix::thread::disable_transparent_huge_pages(true).is_ok();
    #[cfg(not(target_os = "linux"))]
    false
}

/// Turns transparent huge pages back on (after [`huge_pages_off`] said they were on).
fn huge_pages_on() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(false);
}

fn main() -> ExitCode {
    // Transparent huge pages are off until the command is known, and stay off for a short run.
    // The allocator asks for huge pages for its whole arena, so each 2 MiB of it a run first
    // touches is a huge page the kernel zeroes at once: 16 % of a one-manifest `render`'s
    // samples on the machine measured (`perf record`), about a third of its system time, where
    // 4 KiB pages cost less for the little memory it uses. Every other command (a
    // batch render, the fleet, `serve`, and `run`, whose gate commands inherit the setting)
    // gets them back as its caller had them. ARCHITECTURE.md, "Start-up: what a short run
    // costs the kernel". Where the kernel refuses, nothing changes.
    let were_on = huge_pages_off();
    let cli = Cli::parse();
    if were_on && !cli.command.is_short() {
        huge_pages_on();
    }
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    // Not locked for the whole run: `serve` logs from worker threads.
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let result = run(cli, &mut out, &mut err);
    let _ = out.flush();
    match result {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::Differs) => ExitCode::from(1),
        Err(e) => {
            let mut text = e.to_string();
            if !text.starts_with("error") {
                text = format!("error: {text}");
            }
            let _ = writeln!(err, "{}", paint(&text, color));
            ExitCode::from(2)
        }
    }
}
