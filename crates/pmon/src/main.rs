//! `pmon`: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pmon::cli::Cli::parse();
    pmon::logging::init();
    match pmon::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pmon: {error:#}");
            ExitCode::from(pmon::exit_code(&error))
        }
    }
}
