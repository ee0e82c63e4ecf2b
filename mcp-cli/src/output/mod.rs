//! Printing, under one contract for scripts and people (README, "Output
//! and exit codes"):
//!
//! - `--json`: every answer is one JSON object on standard output in the
//!   envelope of [`json`]; `mcp logs --json` prints JSON Lines; an error is
//!   one JSON object on standard error.
//! - Otherwise, [`tables`] on standard output, progress on standard error,
//!   and an error as one line on standard error, printed once.
//! - Exit codes ([`Exit`]): 0 success, 1 failure, 2 usage error, 3 ran fine
//!   but found something (drift, pending changes).
//! - A closed standard output (`mcp ps | head -n1`) ends the command
//!   quietly.

pub mod json;
pub mod tables;

use std::io::Write;

use mcp_core::client::transfer::{TreeMoved, TreeProgress};
use mcp_core::config::NodeEntry;
use mcp_core::proto as pb;
use serde_json::Value;

/// Transfers at least this large get a progress bar on a terminal.
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

/// How `mcp` ends: the exit codes a script can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It did what was asked, and found nothing to report.
    Ok = 0,
    /// It failed (or a component did); the reason is on standard error.
    Failure = 1,
    /// The command line was wrong.
    Usage = 2,
    /// It ran fine and found something: `status` with drift, `sync
    /// --dry-run` with changes to make (as `diff` and `terraform plan
    /// -detailed-exitcode` do).
    Found = 3,
}

/// Where and how results are printed.
pub struct Output {
    /// JSON instead of tables.
    pub json: bool,
}

/// The progress bar of one push or pull ([`Output::progress`]).
pub struct TransferBar {
    bar: indicatif::ProgressBar,
    drawable: bool,
}

impl TransferBar {
    /// Shows how the transfer is going.
    pub fn show(&self, p: TreeProgress) {
        match p {
            TreeProgress::Planned { total_bytes } => {
                self.bar.set_length(total_bytes);
                if self.drawable && total_bytes >= PROGRESS_MIN_BYTES {
                    self.bar
                        .set_draw_target(indicatif::ProgressDrawTarget::stderr());
                }
            }
            TreeProgress::Moved(n) => self.bar.inc(n),
        }
    }

    /// Takes the bar off the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Writes `v` and a newline to standard output in one piece, so that a
/// closed pipe is an `io::Error` (a quiet exit), never a half-written
/// object followed by a panic.
fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

impl Output {
    /// An output in the chosen format.
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// A progress bar for a push or pull, drawn on standard error once the
    /// transfer is known to be large enough to be worth one, when standard
    /// error is a terminal and the output is not JSON; hidden otherwise.
    pub fn progress(&self) -> TransferBar {
        use std::io::IsTerminal;
        let bar = indicatif::ProgressBar::hidden();
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        TransferBar {
            bar,
            drawable: !self.json && std::io::stderr().is_terminal(),
        }
    }

    /// One step of a deploy in progress, on standard error (not with
    /// `--json`): `web-api: waiting (check 2: HTTP 503 from ...)`.
    pub fn deploy_progress(&self, service: &str, p: &pb::DeployProgress) {
        if self.json {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if p.detail.is_empty() {
            writeln!(err, "{service}-{}: {}", p.component, p.phase)
        } else {
            writeln!(err, "{service}-{}: {} ({})", p.component, p.phase, p.detail)
        };
    }

    /// `mcp push` / `mcp pull`: the files moved and their digests.
    pub fn moved(&self, verb: &str, tree: &TreeMoved) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(vec![json::moved(tree)]));
        }
        tables::moved(verb, tree)
    }

    /// `mcp ls`.
    pub fn files(
        &self,
        node: &str,
        service: &str,
        entries: &[pb::FileEntry],
    ) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(vec![json::files(node, service, entries)]));
        }
        tables::files(entries)
    }

    /// `mcp rm`.
    pub fn removed_file(&self, node: &str, service: &str, path: &str) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(vec![json::removed_file(
                node, service, path,
            )]));
        }
        tables::removed_file(node, service, path)
    }

    /// Per-component results of a state-changing command.
    pub fn results(
        &self,
        node: &str,
        service: &str,
        results: &[pb::ComponentResult],
    ) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(vec![json::action(node, service, results)]));
        }
        tables::results(service, results)
    }

    /// `mcp status`; [`Exit::Found`] when a component drifted or an
    /// unmanaged instance holds a service's name.
    pub fn status(&self, reports: &[pb::StatusResponse]) -> anyhow::Result<Exit> {
        if self.json {
            print_json(&json::envelope(reports.iter().map(json::status).collect()))?;
        } else {
            tables::status(reports)?;
        }
        let found = reports
            .iter()
            .any(|r| !r.unmanaged.is_empty() || r.components.iter().any(|c| !c.drift.is_empty()));
        Ok(if found { Exit::Found } else { Exit::Ok })
    }

    /// `mcp ps`.
    pub fn ps(&self, reports: &[pb::PsResponse]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(reports.iter().map(json::ps).collect()));
        }
        tables::ps(reports)
    }

    /// `mcp sync`: the plan per node, then (unless a dry run) what was
    /// done; [`Exit::Found`] for a dry run with changes to make.
    pub fn sync(&self, answers: &[(String, pb::SyncResponse)]) -> anyhow::Result<Exit> {
        if self.json {
            print_json(&json::envelope(
                answers.iter().map(|(n, r)| json::sync(n, r)).collect(),
            ))?;
        } else {
            tables::sync(answers)?;
        }
        let pending = answers
            .iter()
            .any(|(_, r)| r.dry_run && r.plan.iter().any(|s| s.action != "unchanged"));
        Ok(if pending { Exit::Found } else { Exit::Ok })
    }

    /// `mcp adopt`.
    pub fn adopt(
        &self,
        node: &str,
        definition: &str,
        res: &pb::AdoptResponse,
        written: Option<&std::path::Path>,
    ) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(vec![json::adopt(
                node, definition, res, written,
            )]));
        }
        tables::adopt(node, res, written)
    }

    /// `mcp events`.
    pub fn events(&self, all: &[(String, pb::EventsResponse)]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(
                all.iter().map(|(n, r)| json::events(n, r)).collect(),
            ));
        }
        tables::events(all)
    }

    /// `mcp history`: one row per revision, newest first.
    pub fn history(&self, node: &str, res: &pb::HistoryResponse) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(vec![json::history(node, res)]));
        }
        tables::history(res)
    }

    /// `mcp list`.
    pub fn list(&self, lists: &[(String, pb::ListResponse)]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(
                lists.iter().map(|(n, l)| json::list(n, l)).collect(),
            ));
        }
        tables::list(lists)
    }

    /// `mcp node list`.
    pub fn nodes(&self, nodes: &[NodeEntry]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(json::configured(nodes)));
        }
        tables::nodes(nodes)
    }

    /// `mcp node list` with a master, and what `drain` and `undrain` leave:
    /// the fleet's nodes as the master sees them.
    pub fn fleet_nodes(&self, nodes: &[pb::NodeSummary]) -> anyhow::Result<()> {
        if self.json {
            return print_json(&json::envelope(
                nodes.iter().map(json::fleet_node).collect(),
            ));
        }
        tables::fleet_nodes(nodes)
    }

    /// `mcp node info`: every node asked, reachable or not (one that is not
    /// carries its error); fails when none answered.
    pub fn node_info(
        &self,
        infos: &[(NodeEntry, anyhow::Result<pb::NodeInfoResponse>)],
    ) -> anyhow::Result<()> {
        if self.json {
            let answers = infos
                .iter()
                .map(|(n, r)| match r {
                    Ok(i) => json::node_info(&n.name, i),
                    Err(e) => {
                        let (code, _) = error_code_and_node(e);
                        let mut v = json::error(&one_line(e), code, Some(&n.name));
                        v["node"] = Value::String(n.name.clone());
                        v
                    }
                })
                .collect();
            return print_json(&json::envelope(answers));
        }
        tables::node_info(infos)
    }

    /// Lines of `mcp logs`: with `--json` one JSON object per line;
    /// otherwise the output as it came, prefixed by the component when
    /// several are shown, standard error's on standard error.
    pub fn log_lines(
        &self,
        node: &str,
        service: &str,
        lines: &[mcp_core::client::LogLine],
        prefixed: bool,
    ) -> anyhow::Result<()> {
        for line in lines {
            if self.json {
                let mut text = serde_json::to_string(&json::log_line(node, service, line))?;
                text.push('\n');
                std::io::stdout().lock().write_all(text.as_bytes())?;
                continue;
            }
            let mut w: Box<dyn Write> = if line.stream == "stderr" {
                Box::new(std::io::stderr().lock())
            } else {
                Box::new(std::io::stdout().lock())
            };
            if prefixed {
                write!(w, "{} | ", line.component)?;
            }
            w.write_all(&line.data)?;
            w.write_all(b"\n")?;
            w.flush()?;
        }
        Ok(())
    }

    /// Reports `err` on standard error, once: a JSON object under
    /// `--json`, else `mcp: error: ` and one line.
    pub fn error(&self, err: &anyhow::Error) {
        let text = one_line(err);
        let mut stderr = std::io::stderr().lock();
        let _ = if self.json {
            let (code, node) = error_code_and_node(err);
            writeln!(stderr, "{}", json::error(&text, code, node.as_deref()))
        } else {
            writeln!(stderr, "mcp: error: {text}")
        };
    }
}

/// The gRPC status name and the node of an error that came from a node.
fn error_code_and_node(err: &anyhow::Error) -> (Option<&'static str>, Option<String>) {
    use mcp_core::client::transfer::TransferError;
    use mcp_core::client::{ClientError, code_name};
    use mcp_core::ops::OpsError;
    let client = err.chain().find_map(|c| {
        c.downcast_ref::<ClientError>()
            .or_else(|| match c.downcast_ref::<OpsError>() {
                Some(OpsError::Client(e)) => Some(e),
                Some(OpsError::Transfer(TransferError::Client(e))) => Some(e),
                _ => None,
            })
            .or_else(|| match c.downcast_ref::<TransferError>() {
                Some(TransferError::Client(e)) => Some(e),
                _ => None,
            })
    });
    match client {
        Some(e) => (e.code().map(code_name), e.node().map(str::to_string)),
        None => (None, None),
    }
}

/// Fails when any component failed, naming them.
pub fn check_results(service: &str, results: &[pb::ComponentResult]) -> anyhow::Result<()> {
    match mcp_core::client::failures(service, results) {
        Some(failed) => anyhow::bail!("{failed}"),
        None => Ok(()),
    }
}

/// An error chain as one line: `context: cause: root cause`, each part
/// once (a cause its context already quotes is not repeated).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Whether the error is a closed stdout (as with `mcp ps | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The node that answered: the one a master names (`answer`), else the
/// one asked.
pub fn answered<'a>(asked: &'a str, answer: &'a str) -> &'a str {
    if answer.is_empty() { asked } else { answer }
}
