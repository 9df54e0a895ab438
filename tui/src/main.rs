//! `ordersctl`: run the pipeline locally, benchmark it, watch it.

fn main() -> std::process::ExitCode {
    ordersctl::main()
}
