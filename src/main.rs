fn main() -> std::process::ExitCode {
    tilepipe::cli::main()
}
