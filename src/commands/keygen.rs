//! `coffer keygen --output FILE`.

use std::process::ExitCode;

use crate::cli::KeygenArgs;

pub fn run(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let recipient = crate::keys::generate(&args.output)?;
    println!("{recipient}");
    eprintln!(
        "identity written to {} (mode 0600). Put the recipient above in encryption.recipients; \
         keep the identity file off the backup host and somewhere safe: without it no backup \
         can be restored.",
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
