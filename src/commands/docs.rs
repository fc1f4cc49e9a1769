//! `coffer completions SHELL` and `coffer man`: shell completions and the man page, made from
//! the command-line definitions themselves (the Debian package installs both).

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;

/// Prints `shell`'s completions for coffer.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "coffer", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints coffer(1): the commands with their options, then the exit codes.
pub fn man() -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    // Each command's options, as `coffer COMMAND --help` shows them.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        writeln!(out, ".SH \"COFFER {}\"", sub.get_name().to_uppercase())?;
        let help = sub
            .clone()
            .bin_name(format!("coffer {}", sub.get_name()))
            .render_long_help();
        writeln!(out, ".nf")?;
        for line in help.to_string().lines() {
            writeln!(out, "{}", roff_escape(line))?;
        }
        writeln!(out, ".fi")?;
    }
    writeln!(out, ".SH \"EXIT STATUS\"\n.nf")?;
    for line in crate::exit::TABLE.lines().skip(1) {
        writeln!(out, "{}", roff_escape(line))?;
    }
    writeln!(out, ".fi")?;
    writeln!(
        out,
        ".SH \"SEE ALSO\"\n/usr/share/doc/coffer/ (README, OPERATIONS, RECOVERY, FORMAT), age(1), tar(1)"
    )?;
    man.render_version_section(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// A line of text as roff shows it literally (backslashes doubled; a leading `.` or `'`
/// escaped).
fn roff_escape(line: &str) -> String {
    let line = line.replace('\\', "\\e");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}
