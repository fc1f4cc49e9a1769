//! Progress bars for long interactive work: drawn on stderr when it is a terminal, silent
//! otherwise (logs, pipes, systemd).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress is shown at all (stderr is a terminal).
pub fn is_interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// A byte counter shown as a bar (known total) or a spinner with throughput.
pub struct Progress(ProgressBar);

impl Progress {
    pub fn bytes(label: &str, total: Option<u64>) -> Self {
        let target = if is_interactive() {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), target).with_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::with_draw_target(None, target).with_style(
                ProgressStyle::with_template("{prefix} {spinner} {binary_bytes} {binary_bytes_per_sec} {msg}")
                    .expect("valid template"),
            ),
        };
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress(bar)
    }

    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        self.0.set_message(msg.into());
    }

    /// Removes the bar from the screen.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
