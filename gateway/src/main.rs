//! The `aie` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    aie::cli::main()
}
