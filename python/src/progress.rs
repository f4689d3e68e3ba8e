//! A progress bar (`srvdb/_progress.py`: tqdm when installed) advanced from Rust while the GIL
//! is released. The bar is decoration: its own failures never fail the job.

use pyo3::prelude::*;

pub(crate) struct Bar {
    /// The tqdm object, or `None` when no bar is drawn.
    bar: Option<Py<PyAny>>,
    /// Items the bar shows as done.
    shown: usize,
}

impl Bar {
    /// A bar for `total` items, as `progress` asks (`None`: only for big interactive jobs).
    pub(crate) fn new(py: Python<'_>, total: usize, progress: Option<bool>, desc: &str) -> Self {
        let bar = match progress {
            Some(false) => None,
            _ => py
                .import("srvdb._progress")
                .and_then(|m| m.call_method1("bar", (total, progress, desc)))
                .ok()
                .filter(|bar| !bar.is_none())
                .map(Bound::unbind),
        };
        Bar { bar, shown: 0 }
    }

    /// Moves the bar to `done` items. Called without the GIL; takes it only to draw.
    pub(crate) fn advance(&mut self, done: usize) {
        let Some(bar) = &self.bar else { return };
        let step = done.saturating_sub(self.shown);
        if step == 0 {
            return;
        }
        self.shown = done;
        Python::attach(|py| {
            let _ = bar
                .bind(py)
                .call_method1(pyo3::intern!(py, "update"), (step,));
        });
    }

    /// Closes the bar (it stays on screen at its last count).
    pub(crate) fn close(self, py: Python<'_>) {
        if let Some(bar) = self.bar {
            let _ = bar.bind(py).call_method0(pyo3::intern!(py, "close"));
        }
    }
}
