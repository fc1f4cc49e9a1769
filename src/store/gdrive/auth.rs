//! Authorising coffer for Google Drive: service accounts (with or without delegation) and
//! a user's own Drive after `coffer auth gdrive` (a token cached 0600 and refreshed).

use std::io::{self};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::*;

/// How the store authenticates.
#[derive(Debug, Clone)]
pub enum DriveAuth {
    /// A service-account key file (JSON); with `subject`, domain-wide delegation as that user.
    ServiceAccount {
        key_file: std::path::PathBuf,
        subject: Option<String>,
    },
    /// A user's OAuth token, obtained once with `coffer auth gdrive` (installed-app flow) and
    /// kept (0600) in `token_file`, refreshed as needed.
    UserToken {
        client_file: std::path::PathBuf,
        token_file: std::path::PathBuf,
    },
}

/// The installed flow's delegate for the store: it never waits for a browser. A token that can
/// no longer be refreshed must be renewed by hand.
pub(super) struct NoBrowser;

impl yup_oauth2::authenticator_delegate::InstalledFlowDelegate for NoBrowser {
    fn present_user_url<'a>(
        &'a self,
        _url: &'a str,
        _need_code: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async {
            Err(
                "the Drive token can no longer be refreshed (revoked or expired): run \
                 coffer auth gdrive again"
                    .to_string(),
            )
        })
    }
}

/// The delegate of `coffer auth gdrive`: prints where to sign in.
pub(super) struct ShowUrl;

impl yup_oauth2::authenticator_delegate::InstalledFlowDelegate for ShowUrl {
    fn present_user_url<'a>(
        &'a self,
        url: &'a str,
        _need_code: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async move {
            eprintln!(
                "Open this address in a browser, sign in as the account that will hold the \
                 backups, and allow access:\n\n{url}\n\nThe browser is sent back to this \
                 machine's 127.0.0.1 when you allow it (from another machine, forward that \
                 port with ssh -L first). Waiting…"
            );
            Ok(String::new())
        })
    }
}

/// Reads an OAuth client ("installed app") file from the Google Cloud console.
pub(super) async fn read_client(
    path: &std::path::Path,
) -> Result<yup_oauth2::ApplicationSecret, String> {
    yup_oauth2::read_application_secret(path)
        .await
        .map_err(|e| {
            format!(
                "cannot read the OAuth client file {}: {e} (create an OAuth client of type \
             Desktop app in the Google Cloud console and download its JSON)",
                path.display()
            )
        })
}

/// `coffer auth gdrive`: the installed-app flow once, storing the token (0600) in the config's
/// token file. `port` fixes the local redirect port (for an ssh tunnel).
///
/// # Errors
/// When the client file cannot be read, the flow fails, or the token cannot be stored.
pub fn authorize(config: &DriveConfig, port: Option<u16>) -> Result<std::path::PathBuf, String> {
    let DriveAuth::UserToken {
        client_file,
        token_file,
    } = &config.auth
    else {
        return Err(
            "the store authenticates with a service account: nothing to authorize (set \
             oauth_client_file instead of service_account_key_file to use a user's Drive)"
                .into(),
        );
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let secret = read_client(client_file).await?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| e.to_string())?
            .https_or_http()
            .enable_http1()
            .build();
        let token_client: Client<Connector, String> =
            Client::builder(TokioExecutor::new()).build(connector);
        let method = match port {
            Some(p) => yup_oauth2::InstalledFlowReturnMethod::HTTPPortRedirect(p),
            None => yup_oauth2::InstalledFlowReturnMethod::HTTPRedirect,
        };
        // Sign in into a new file; the working token (if any) is replaced only on success.
        let fresh = token_file.with_extension("json.new");
        match std::fs::remove_file(&fresh) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", fresh.display())),
        }
        if let Some(dir) = token_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let auth = yup_oauth2::InstalledFlowAuthenticator::with_client(
            secret,
            method,
            yup_oauth2::CustomHyperClientBuilder::from(token_client),
        )
        .persist_tokens_to_disk(fresh.clone())
        .flow_delegate(Box::new(ShowUrl))
        .build()
        .await
        .map_err(|e| e.to_string())?;
        auth.token(&[SCOPE])
            .await
            .map_err(|e| format!("the sign-in did not complete: {e}"))?;
        private_file(&fresh)?;
        std::fs::rename(&fresh, token_file)
            .map_err(|e| format!("storing the token in {}: {e}", token_file.display()))?;
        Ok::<(), String>(())
    })?;
    Ok(token_file.clone())
}

/// Makes sure a file holding a secret is readable by its owner only.
pub(super) fn private_file(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("making {} private: {e}", path.display()))
}
