use std::process::ExitCode;

use clap::Parser;
use coffer::cli::{Cli, Command, LogFormat};
use coffer::commands;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // Whatever COFFER_LOG asks for, the OAuth and HTTP libraries never log at debug: they
    // would print access tokens, signed token requests and token answers.
    let filter = [
        "yup_oauth2=warn",
        "hyper=info",
        "hyper_util=info",
        "h2=info",
        "rustls=info",
    ]
    .into_iter()
    .fold(filter, |f, d| {
        f.add_directive(d.parse().expect("a valid directive"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let result = match &cli.command {
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Backup(args) => commands::backup::run(&cli.config, args),
        Command::List(args) => commands::list::run(&cli.config, args),
        Command::Verify(args) => commands::verify::run(&cli.config, args),
        Command::Restore(args) => commands::restore::run(&cli.config, args),
        Command::Check(args) => commands::check::run(&cli.config, args),
        Command::Auth(args) => commands::auth::run(&cli.config, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
