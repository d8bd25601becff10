//! Progress bars for long imports: drawn on a terminal (stderr), silent otherwise, so logs and
//! pipelines stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use settle_core::csv::ImportProgress;

/// An indicatif bar measured in bytes of the input file.
pub struct BytesBar {
    bar: ProgressBar,
}

impl BytesBar {
    pub fn new() -> Self {
        let bar = ProgressBar::hidden();
        if std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        let style =
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        BytesBar { bar }
    }
}

impl ImportProgress for BytesBar {
    fn start(&self, pass: &'static str, total_bytes: u64) {
        self.bar.reset();
        self.bar.set_length(total_bytes);
        self.bar.set_message(pass);
    }

    fn advance(&self, bytes_read: u64) {
        self.bar.set_position(bytes_read);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A counting bar for steps (days settled, batches written).
pub fn steps(total: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::hidden();
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar.set_length(total);
    bar.set_message(message);
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
