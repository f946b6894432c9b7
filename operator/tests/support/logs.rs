//! The logs of the processes that tests start (control planes, media nodes): each writes to a
//! file of its own in this test process's folder, and a failing test shows what they said about
//! it ([`process_log_excerpt`]).

use std::path::PathBuf;

/// What the control-plane and media-node processes that tests start log: the project's own
/// lines from `info` up (a node's attempts to attach from `debug`), and every crate's warnings.
/// They are started with `NO_COLOR` set, so the files hold plain text.
pub const PROCESS_LOG_LEVEL: &str = "warn,treffpunkt=info,treffpunkt_operator=info,\
                                 treffpunkt_media_node=info,treffpunkt_media_node::control=debug";

/// This test process's folder: the API server's audit log and the processes' logs. It goes once
/// the process has ended, when the next one starts the test environment.
pub fn folder() -> PathBuf {
    std::env::temp_dir().join(format!("treffpunkt-audit-{}", std::process::id()))
}

/// A new log file for a process that a test starts, named after `name`, in [`folder`].
pub fn process_log(name: &str) -> std::fs::File {
    let dir = folder();
    std::fs::create_dir_all(&dir).expect("a folder for the processes' logs");
    std::fs::File::create(dir.join(format!("{name}.log"))).expect("a log file for a process")
}

/// The last `limit` lines that the processes this test process started logged and that contain
/// one of `words`, in the order they were written (each starts with its time), with the name
/// of the process: what a failing test shows of how the control plane and the nodes saw it.
pub fn process_log_excerpt(words: &[&str], limit: usize) -> String {
    let dir = folder();
    let mut lines: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(process) = name.strip_suffix(".log").filter(|p| *p != "audit") else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            if words.iter().any(|word| line.contains(word)) {
                lines.push((line.to_owned(), process.to_owned()));
            }
        }
    }
    lines.sort();
    let skip = lines.len().saturating_sub(limit);
    lines
        .into_iter()
        .skip(skip)
        .map(|(line, process)| format!("[{process}] {line}\n"))
        .collect()
}
