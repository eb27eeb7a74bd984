//! A service's own TLS certificate.

use std::path::PathBuf;

use anyhow::Context;

use crate::args::CertificateCommand;
use crate::credentials;

pub async fn certificate(command: CertificateCommand) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    match command {
        CertificateCommand::Upload { service, cert, key } => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let info = api
                .put_certificate(&service, &read(&cert)?, &read(&key)?)
                .await?;
            println!(
                "certificate {} uploaded for {service}",
                info.fingerprint_sha256
            );
        }
        CertificateCommand::Show { service } => {
            println!("{}", api.certificate(&service).await?.fingerprint_sha256);
        }
        CertificateCommand::Remove { service } => {
            api.remove_certificate(&service).await?;
            println!("certificate of {service} removed");
        }
    }
    Ok(())
}
