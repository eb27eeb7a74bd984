//! Who may call: logging in, tenants (operators), API tokens and the
//! node list (operators).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::args::{TenantCommand, TokenCommand};
use crate::credentials::{self, Credentials};
use crate::output::print_table;

pub async fn login(url: String, token: String, ca_file: Option<PathBuf>) -> anyhow::Result<()> {
    // Kept absolute: edgectl runs from any directory.
    let ca_file = ca_file
        .map(|path| std::fs::canonicalize(&path).with_context(|| path.display().to_string()))
        .transpose()?;
    credentials::connect(&url, &token, ca_file.as_deref())?
        .services()
        .await
        .context("checking the token")?;
    let saved = Credentials {
        url,
        token,
        ca_file,
    }
    .save()?;
    println!("logged in; credentials saved to {}", saved.display());
    Ok(())
}

pub async fn create_tenant(
    name: &str,
    url: Option<&str>,
    ca_file: Option<&Path>,
    admin_token: &str,
    allow_private_backends: bool,
) -> anyhow::Result<()> {
    let api = match url {
        Some(url) => credentials::connect(url, admin_token, ca_file)?,
        None => credentials::operator(admin_token)?,
    };
    let created = api.create_tenant(name, allow_private_backends).await?;
    println!("{}", created.token);
    Ok(())
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    match command {
        TokenCommand::Create { label } => {
            println!("{}", api.create_token(&label).await?.token);
        }
        TokenCommand::List => {
            print_table(&api.tokens().await?, &["id", "label", "created_at"]);
        }
        TokenCommand::Revoke { id } => {
            api.revoke_token(&id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

pub async fn tenant(command: TenantCommand, admin_token: Option<String>) -> anyhow::Result<()> {
    let admin_token = admin_token.context("give --admin-token or set EDGE_ADMIN_TOKEN")?;
    let api = credentials::operator(&admin_token)?;
    match command {
        TenantCommand::Suspend { name } => {
            api.suspend_tenant(&name).await?;
            println!("tenant {name} suspended");
        }
        TenantCommand::Resume { name } => {
            api.resume_tenant(&name).await?;
            println!("tenant {name} resumed");
        }
        TenantCommand::RevokeTokens { name } => {
            api.revoke_tenant_tokens(&name).await?;
            println!("every token of {name} revoked");
        }
    }
    Ok(())
}

pub async fn nodes(admin_token: &str) -> anyhow::Result<()> {
    let nodes = credentials::operator(admin_token)?.nodes().await?;
    print_table(
        &nodes,
        &["name", "id", "healthy", "snapshot_version", "last_seen_at"],
    );
    Ok(())
}
