//! Real browser pages in a cluster test's room: headless Chromium with a fake camera and
//! microphone, driven by the browser tests' `e2e/drive-call.mjs` (Node.js and the browser tests'
//! npm packages, which the test command installs before the Rust tests run).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

/// How long the pages may take to join and decode each other.
const READY: Duration = Duration::from_secs(90);

/// Pages in one call, watching their decoded video from the moment all of them decoded.
pub struct BrowserCall {
    driver: Child,
    commands: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

/// What the pages saw since they were ready, by page in the order of their names.
#[derive(Debug, Deserialize)]
pub struct Watched {
    /// The longest time without a new decoded video frame, in milliseconds.
    pub longest: Vec<u64>,
    /// When that time ended, in milliseconds since the page opened (as in its log).
    pub ended: Vec<Option<u64>>,
    /// Video frames decoded.
    pub frames: Vec<u64>,
    /// Each media connection the page had since it was ready: when it was first seen, and when
    /// it first sent, received and decoded video (milliseconds on the page's clock).
    pub connections: Vec<Vec<Connection>>,
    /// Whether the page decodes video and hears audio now.
    pub decoding: Vec<bool>,
    /// The page's log of its connection's events (milliseconds since the page opened, and what).
    pub log: Vec<Vec<String>>,
}

/// One media connection of a page, on the page's clock (see [`Watched::connections`]).
#[derive(Debug, Deserialize)]
pub struct Connection {
    /// When the page first had it.
    pub at: u64,
    /// When it first sent video.
    pub sent: Option<u64>,
    /// When it first received video.
    pub received: Option<u64>,
    /// When it first decoded a video frame.
    pub decoded: Option<u64>,
}

#[derive(Deserialize)]
struct Ready {
    ready: bool,
    why: Option<String>,
}

impl BrowserCall {
    /// Opens `room_url` once for each of `names`; returns once every page decodes video and
    /// hears audio. Panics with what the driver said if they do not.
    pub async fn join(room_url: &str, names: &[&str]) -> Self {
        let e2e = super::repository("e2e");
        assert!(
            e2e.join("node_modules/playwright-core").is_dir(),
            "the browser pages need the browser tests' npm packages: the test command installs \
             them (or run `npm ci` in e2e/)"
        );
        let mut driver = Command::new("node")
            .arg("drive-call.mjs")
            .arg(room_url)
            .args(names)
            .current_dir(&e2e)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("Node.js runs the browser driver");
        let commands = driver.stdin.take();
        let stdout = driver.stdout.take().expect("the driver's output");
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut call = Self {
            driver,
            commands,
            lines,
        };
        let ready: Ready = call.answer(READY).await;
        assert!(
            ready.ready,
            "the pages {names:?} decode each other: {}",
            ready.why.unwrap_or_default()
        );
        call
    }

    /// What the pages saw since they were ready.
    pub async fn watched(&mut self) -> Watched {
        let commands = self.commands.as_mut().expect("the driver runs");
        commands
            .write_all(b"report\n")
            .and_then(|()| commands.flush())
            .expect("the driver reads");
        self.answer(Duration::from_secs(30)).await
    }

    async fn answer<T: serde::de::DeserializeOwned>(&mut self, within: Duration) -> T {
        let line = tokio::time::timeout(within, self.lines.recv())
            .await
            .expect("the browser driver answers in time")
            .expect("the browser driver runs (its error output above says why not)");
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}"))
    }
}

impl Drop for BrowserCall {
    /// Ends the driver's input, so that it closes the browser, and waits a little for that.
    fn drop(&mut self) {
        drop(self.commands.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.driver.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
