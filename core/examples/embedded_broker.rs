//! An embedded broker on its own: the pipeline's and the operators' topics, nothing
//! consuming or producing. Prints its bootstrap address on stdout (one line) and serves
//! until it is killed. For measuring daemons each run alone (`ops/scripts/bench-rss.sh`),
//! as `ordersctl up` would also run members of every group.
//!
//! `cargo run --release -p orders-core --example embedded_broker [-- ORDERS_TOPIC]`

use orders_core::kafka::{operator_topics, pipeline_topics, EmbeddedBroker};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orders_topic = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "orders".to_owned());
    let mut topics = pipeline_topics(&orders_topic);
    topics.extend(operator_topics(&orders_topic));
    let broker = EmbeddedBroker::start(&topics)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", broker.bootstrap_servers())?;
    stdout.flush()?;
    // Serves on its own thread until the process is killed (SIGTERM, SIGKILL).
    loop {
        std::thread::park();
    }
}
