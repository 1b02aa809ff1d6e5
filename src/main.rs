//! The `tilepipe` binary. Everything, the command line included, lives in
//! the library: see `tilepipe::cli`.

fn main() -> std::process::ExitCode {
    tilepipe::cli::main()
}
