//! `coffer keygen --output FILE [--signing]`.

use std::process::ExitCode;

use crate::cli::KeygenArgs;

pub fn run(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let made = make(args);
    // No config, so no run history: the audit line is the record.
    let mut finished = match &made {
        Ok(_) => crate::catalog::Finish::success(),
        Err(e) => crate::catalog::Finish::failed(
            crate::catalog::Outcome::Failure,
            crate::text::error_chain(e),
        ),
    };
    finished.target = Some(args.output.display().to_string());
    crate::job::audit_line("keygen", crate::schedule::Trigger::Manual, &finished);
    made
}

fn make(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    if args.signing {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let key = crate::signing::SigningKey::generate(&crate::signing::principal_of(&host));
        key.write_new(&args.output)?;
        let public = key.public();
        println!("{}", public.openssh());
        eprintln!(
            "signing key written to {} (mode 0600), its public key to {}.pub ({}).\n\
             On the backup host: [signing] key_file = \"{}\" (or load it as a systemd \
             credential).\n\
             On every host that restores or drills: put the line above in \
             encryption.trusted_signers.\n\
             Keep a copy beside the age identity, off the backup host.",
            args.output.display(),
            args.output.display(),
            public.fingerprint(),
            args.output.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
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
