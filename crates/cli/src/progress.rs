//! The backfill progress bar: on a terminal only, never with --quiet.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tfaudit_sync::Progress;

pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn new(show: bool, name: &str) -> Self {
        let bar = show.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}: asking for the first page")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(crate::output::terminal_safe(name).into_owned());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self { bar }
    }
}

impl Progress for Bar {
    fn begin(&self, first_page: u64, total: Option<u64>) {
        let Some(bar) = &self.bar else { return };
        match total {
            Some(total) if first_page == 1 => {
                bar.set_length(total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {human_pos}/{human_len} events, {elapsed} ({eta} left)",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
            }
            _ => {
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {human_pos} events, {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
        }
    }

    fn page(&self, events: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(events);
        }
    }

    fn end(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
