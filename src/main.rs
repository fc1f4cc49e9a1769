use std::process::ExitCode;

use clap::Parser;
use coffer::cli::{Cli, Command, LogFormat};
use coffer::commands;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon's log is its record (next runs, outcomes): info by default.
    let default = if matches!(cli.command, Command::Daemon) {
        "info"
    } else {
        "warn"
    };
    // Each run's audit line (who, what, where) is logged whatever the level, unless
    // COFFER_LOG says otherwise.
    let filter = EnvFilter::try_from_env("COFFER_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},coffer::audit=info")));
    // Whatever COFFER_LOG asks for (even a more specific target such as
    // `yup_oauth2::refresh=debug`), the OAuth and HTTP libraries never log below these
    // levels: they would print access tokens, refresh tokens and signed token requests.
    let guard = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("yup_oauth2", LevelFilter::WARN)
        .with_target("hyper", LevelFilter::INFO)
        .with_target("hyper_util", LevelFilter::INFO)
        .with_target("h2", LevelFilter::INFO)
        .with_target("rustls", LevelFilter::INFO);
    // Colours on a terminal only: journald and log files get plain text.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(filter.and(guard)))
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(filter.and(guard)))
            .init(),
    }
    if matches!(
        cli.command,
        Command::Backup(_) | Command::Prune(_) | Command::Drill(_) | Command::Forget(_)
    ) {
        coffer::shutdown::stop_on_signals();
    }
    let result = match &cli.command {
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Backup(args) => commands::backup::run(&cli.config, args),
        Command::List(args) => commands::list::run(&cli.config, args),
        Command::Verify(args) => commands::verify::run(&cli.config, args),
        Command::Restore(args) => commands::restore::run(&cli.config, args),
        Command::Check(args) => commands::check::run(&cli.config, args),
        Command::Auth(args) => commands::auth::run(&cli.config, args),
        Command::Prune(args) => commands::prune::run(&cli.config, args),
        Command::Daemon => commands::daemon::run(&cli.config),
        Command::Alert(args) => commands::alert::run(&cli.config, args),
        Command::Status(args) => commands::status::run(&cli.config, args),
        Command::Drill(args) => commands::drill::run(&cli.config, args),
        Command::Forget(args) => commands::forget::run(&cli.config, args),
        Command::History(args) => commands::history::run(&cli.config, args),
        Command::Init(args) => commands::init::run(&cli.config, args),
        Command::Completions { shell } => commands::docs::completions(*shell),
        Command::Man => commands::docs::man(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors quote names from file trees, archives and the store: escaped.
            eprintln!(
                "error: {}",
                coffer::text::PrintableLines(&coffer::text::error_chain(&e))
            );
            if coffer::lock::is_busy(&e) {
                eprintln!(
                    "hint: wait for it to finish, or pass --wait DURATION to queue behind it"
                );
            }
            ExitCode::from(commands::exit_code(&e).as_u8())
        }
    }
}
