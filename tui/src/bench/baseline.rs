//! The bench's figures against a baseline committed in the repo (`baseline.json` beside
//! this file): a fall of end to end or of the per-op ratio by more than the margin is
//! called a regression, loudly, so a slowdown never again goes unnoticed.

use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

/// The baseline this build carries: figures of `ordersctl bench` with its defaults.
const COMMITTED: &str = include_str!("baseline.json");

/// Figures to compare with.
#[derive(Debug, Clone, Deserialize)]
pub struct Baseline {
    /// Where and how the figures were obtained.
    pub recorded: String,
    pub end_to_end_orders_per_sec: f64,
    pub ratio_per_kafka_record_op: f64,
    /// The largest fall (a fraction) that is still noise.
    pub margin: f64,
}

impl Baseline {
    /// The committed baseline, or the one in `path`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<(String, Baseline)> {
        let (name, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            ),
            None => (
                "tui/src/bench/baseline.json".to_owned(),
                COMMITTED.to_owned(),
            ),
        };
        let baseline: Baseline =
            serde_json::from_str(&text).with_context(|| format!("parsing {name}"))?;
        Ok((name, baseline))
    }
}

/// One figure against its baseline.
#[derive(Debug, Clone)]
pub struct Compared {
    pub name: &'static str,
    pub now: f64,
    pub baseline: f64,
    pub regressed: bool,
}

impl Compared {
    fn new(name: &'static str, now: f64, baseline: f64, margin: f64) -> Self {
        Compared {
            name,
            now,
            baseline,
            regressed: now < baseline * (1.0 - margin),
        }
    }

    /// The change, as a fraction of the baseline.
    pub fn change(&self) -> f64 {
        self.now / self.baseline - 1.0
    }
}

/// End to end and the per-op ratio against `baseline`.
pub fn compare(baseline: &Baseline, end_to_end: f64, ratio_per_op: f64) -> Vec<Compared> {
    vec![
        Compared::new(
            "end to end (orders/s)",
            end_to_end,
            baseline.end_to_end_orders_per_sec,
            baseline.margin,
        ),
        Compared::new(
            "ratio per Kafka record op",
            ratio_per_op,
            baseline.ratio_per_kafka_record_op,
            baseline.margin,
        ),
    ]
}

/// The comparison for the JSON report.
pub fn to_json(source: &str, baseline: &Baseline, compared: &[Compared]) -> Value {
    let figures: serde_json::Map<String, Value> = compared
        .iter()
        .map(|c| {
            (
                c.name.to_owned(),
                json!({
                    "now": c.now,
                    "baseline": c.baseline,
                    "change": (c.change() * 1000.0).round() / 1000.0,
                    "regressed": c.regressed,
                }),
            )
        })
        .collect();
    json!({
        "baseline": source,
        "recorded": baseline.recorded,
        "margin": baseline.margin,
        "figures": figures,
        "regressed": compared.iter().any(|c| c.regressed),
    })
}

/// The comparison as lines for a reader: one per figure, and a banner on a regression.
pub fn render(source: &str, baseline: &Baseline, compared: &[Compared]) -> String {
    let mut out = format!(
        "bench against the baseline {source} ({}), margin {:.0}%:\n",
        baseline.recorded,
        baseline.margin * 100.0
    );
    for c in compared {
        out.push_str(&format!(
            "  {:<28} {:>12.3}  baseline {:>12.3}  {:>+7.1}%  {}\n",
            c.name,
            c.now,
            c.baseline,
            c.change() * 100.0,
            if c.regressed { "REGRESSION" } else { "ok" }
        ));
    }
    for c in compared.iter().filter(|c| c.regressed) {
        out.push_str(&format!(
            "REGRESSION: {} fell {:.0}% below the baseline, more than the {:.0}% margin \
             (see BENCHMARKS.md for how to find where the time goes)\n",
            c.name,
            -c.change() * 100.0,
            baseline.margin * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_committed_baseline_parses() {
        let (_, b) = Baseline::load(None).unwrap();
        assert!(b.end_to_end_orders_per_sec > 0.0 && b.ratio_per_kafka_record_op > 0.0);
        assert!(b.margin > 0.0 && b.margin < 1.0);
    }

    #[test]
    fn a_fall_beyond_the_margin_is_a_regression_and_says_so() {
        let b = Baseline {
            recorded: "test".into(),
            end_to_end_orders_per_sec: 60_000.0,
            ratio_per_kafka_record_op: 0.6,
            margin: 0.25,
        };
        // The figures of the slowdown issue 20 reported: a third of the baseline.
        let c = compare(&b, 18_649.0, 0.058);
        assert!(c.iter().all(|c| c.regressed));
        let text = render("baseline.json", &b, &c);
        assert!(
            text.contains("REGRESSION: end to end (orders/s) fell 69% below"),
            "{text}"
        );
        assert!(to_json("baseline.json", &b, &c)["regressed"]
            .as_bool()
            .unwrap());
        // Within the margin: noise, not a regression.
        let c = compare(&b, 46_000.0, 0.5);
        assert!(c.iter().all(|c| !c.regressed));
        assert!(!render("baseline.json", &b, &c).contains("REGRESSION"));
    }
}
