//! Where `edgectl login` keeps the control plane's URL and the tenant's
//! token: `$EDGECTL_CONFIG`, or `~/.config/edgectl/config.json`, mode 0600.

use std::path::PathBuf;

use anyhow::Context;
use edgectl::client::ApiClient;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub url: String,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Credentials {
    pub fn path() -> anyhow::Result<PathBuf> {
        if let Some(path) = std::env::var_os("EDGECTL_CONFIG") {
            return Ok(PathBuf::from(path));
        }
        let home = std::env::var_os("HOME").context("HOME is not set; set EDGECTL_CONFIG")?;
        Ok(PathBuf::from(home).join(".config/edgectl/config.json"))
    }

    pub fn load() -> anyhow::Result<Self> {
        let path = Self::path()?;
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "not logged in ({} missing); run `edgectl login`",
                path.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{} is unreadable", path.display()))
    }

    pub fn save(&self) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut file, &serde_json::to_vec_pretty(self)?)?;
        Ok(path)
    }

    /// A client of the saved control plane with `token`.
    pub fn client_with(&self, token: &str) -> anyhow::Result<ApiClient> {
        connect(&self.url, token, self.ca_file.as_deref())
    }
}

/// A client of `url`; with `ca_file`, only that CA vouches for it.
pub fn connect(
    url: &str,
    token: &str,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<ApiClient> {
    Ok(match ca_file {
        Some(path) => ApiClient::trusting(url, token, path)?,
        None => ApiClient::new(url, token),
    })
}

/// The logged-in tenant's client.
pub fn logged_in() -> anyhow::Result<ApiClient> {
    let credentials = Credentials::load()?;
    credentials.client_with(&credentials.token)
}

/// The logged-in control plane, with the operator's token.
pub fn operator(admin_token: &str) -> anyhow::Result<ApiClient> {
    Credentials::load()?.client_with(admin_token)
}
