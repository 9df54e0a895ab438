//! `ordersctl`: run the pipeline locally, benchmark it, watch it.

// Rust-side allocations only: librdkafka and SQLite keep the system allocator (librdkafka's
// raw produce+consume measured slower with mimalloc in its place).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ordersctl::main()
}
