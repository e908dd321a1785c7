//! The results: one JSON object per benchmark, on stdout and in the results file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

use crate::figures::Summary;
use crate::stats::round1;

/// Writes each result line to stdout and appends it to the results file at once, so a run that
/// fails half-way keeps the figures it has.
#[derive(Clone)]
pub(crate) struct Report {
    path: PathBuf,
}

impl Report {
    pub(crate) fn create(path: &Path) -> anyhow::Result<Report> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, "").with_context(|| format!("create {}", path.display()))?;
        Ok(Report {
            path: path.to_owned(),
        })
    }

    pub(crate) fn emit(&self, line: Line) -> anyhow::Result<()> {
        let line = line.render();
        println!("{line}");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("open {}", self.path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("write {}", self.path.display()))
    }
}

/// One result: a JSON object whose keys keep their order (`"bench"` first), which
/// serde_json's own map would sort.
pub(crate) struct Line {
    fields: Vec<(String, Value)>,
}

impl Line {
    pub(crate) fn new(bench: &str) -> Line {
        Line {
            fields: vec![("bench".into(), json!(bench))],
        }
    }

    pub(crate) fn with(mut self, key: &str, value: Value) -> Line {
        self.fields.push((key.into(), value));
        self
    }

    /// `n`, then `median_<unit>`, `p95_<unit>`, `min_<unit>`, `max_<unit>`, `mean_<unit>`.
    pub(crate) fn summary(self, s: &Summary, unit: &str) -> Line {
        let figures = [
            ("median", s.median),
            ("p95", s.p95),
            ("min", s.min),
            ("max", s.max),
            ("mean", s.mean),
        ];
        figures
            .into_iter()
            .fold(self.with("n", json!(s.n)), |line, (name, x)| {
                line.with(&format!("{name}_{unit}"), json!(round1(x)))
            })
    }

    fn render(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_field_order() {
        let line = Line::new("x\"y")
            .with("n", json!(2))
            .with("a_ms", json!(1.5))
            .render();
        assert_eq!(line, r#"{"bench":"x\"y","n":2,"a_ms":1.5}"#);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["a_ms"], 1.5);
    }
}
