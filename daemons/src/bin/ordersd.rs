//! `ordersd <role>`: one daemon of the orders pipeline.

fn main() -> anyhow::Result<()> {
    let cli: orders_daemons::cli::Cli = orders_core::config::parse_args_or_exit();
    orders_daemons::cli::init_tracing(cli.log_format);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(orders_daemons::cli::run(cli))
}
