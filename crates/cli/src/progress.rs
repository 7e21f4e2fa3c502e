//! The progress bar of the training commands, drawn on stderr only when someone watches.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `total` steps drawn with `template` (indicatif's syntax), hidden when `quiet` or
/// when stderr is not a terminal.
pub fn bar(total: usize, quiet: bool, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
