//! Progress of a long command on stderr: a bar (or a spinner) redrawn five
//! times a second on a terminal, else a plain line every 10 s for logs.

use std::io::{self, IsTerminal as _, Write as _};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running progress display; [`Progress::finish`] clears it.
pub(crate) struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `report(elapsed)`: how far along (of `len`, when the
    /// total is known: a bar; else a spinner) and a line of figures. Off a
    /// terminal, `<command>: <line>` every 10 s.
    pub(crate) fn start(
        command: &'static str,
        len: Option<u64>,
        report: impl Fn(Duration) -> (u64, String) + Send + 'static,
    ) -> Progress {
        let (stop, stopped) = mpsc::channel::<()>();
        let is_terminal = io::stderr().is_terminal();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let bar = is_terminal.then(|| match len {
                Some(len) => {
                    let bar = indicatif::ProgressBar::new(len);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{elapsed} [{wide_bar}] {percent}% eta {eta} {msg}",
                        )
                        .expect("the template is valid"),
                    );
                    bar
                }
                None => {
                    let bar = indicatif::ProgressBar::new_spinner();
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                            .expect("the template is valid"),
                    );
                    bar
                }
            });
            let interval = if is_terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let (position, line) = report(started.elapsed());
                match &bar {
                    Some(bar) => {
                        bar.set_position(position);
                        bar.set_message(line);
                    }
                    None => {
                        let _ = writeln!(io::stderr(), "{command}: {line}");
                    }
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Progress {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops and clears the display.
    pub(crate) fn finish(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
