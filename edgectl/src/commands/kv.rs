//! KV stores and secrets.

use std::io::{Read as _, Write as _};

use anyhow::{Context, bail};
use edgectl::wire::{KvEntry, KvExpect, KvImport};

use crate::args::{KvCommand, SecretCommand};
use crate::credentials;

/// Keys one import request sets: the control plane's bound.
const IMPORT_CHUNK: usize = 1_000;
/// Seconds an import waits, in all, for the tenant's write rate.
const MAX_RATE_WAITS: usize = 60;

pub async fn kv(command: KvCommand) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    match command {
        KvCommand::Create { store } => {
            api.create_kv_store(&store).await?;
            println!("KV store {store} created; list it in a service's kv_stores to open it");
        }
        KvCommand::Stores => {
            for store in api.kv_stores().await? {
                println!("{}\t{} keys\t{} bytes", store.name, store.keys, store.bytes);
            }
        }
        KvCommand::DeleteStore { store } => {
            api.delete_kv_store(&store).await?;
            println!("KV store {store} deleted");
        }
        KvCommand::Put {
            store,
            key,
            value,
            file,
            if_version,
            if_absent,
        } => {
            let value = match (value, file) {
                (Some(value), _) => value.into_bytes(),
                (None, Some(path)) => {
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
                }
                (None, None) => bail!("give a value or --file"),
            };
            let expect = match (if_version, if_absent) {
                (Some(version), _) => Some(KvExpect::Version(version)),
                (None, true) => Some(KvExpect::Absent),
                (None, false) => None,
            };
            api.kv_put_if(&store, &key, value, expect).await?;
        }
        KvCommand::Get {
            store,
            key,
            print_version,
        } => match api.kv_get_versioned(&store, &key).await? {
            Some((_, version)) if print_version => println!("{version}"),
            Some((value, _)) => std::io::stdout().write_all(&value)?,
            None => bail!("{key:?}: no such key in {store}"),
        },
        KvCommand::List { store, prefix } => {
            let mut after = String::new();
            loop {
                let page = api.kv_keys(&store, &prefix, &after).await?;
                for key in &page.keys {
                    println!("{key}");
                }
                match page.cursor {
                    Some(cursor) => after = cursor,
                    None => break,
                }
            }
        }
        KvCommand::Delete {
            store,
            key,
            if_version,
        } => {
            api.kv_delete_if(&store, &key, if_version.map(KvExpect::Version))
                .await?
        }
        KvCommand::Import { store, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                .with_context(|| format!("{}: a JSON object of keys to values", file.display()))?;
            let entries: Vec<KvEntry> = object
                .into_iter()
                .map(|(key, value)| KvEntry {
                    key,
                    value: match value {
                        serde_json::Value::String(text) => text.into_bytes(),
                        other => other.to_string().into_bytes(),
                    },
                })
                .collect();
            let mut imported = 0;
            for chunk in entries.chunks(IMPORT_CHUNK) {
                let import = KvImport {
                    entries: chunk.to_vec(),
                };
                // Each key counts against the tenant's write rate: a chunk
                // refused for it waits for the next second.
                let mut waits = 0;
                loop {
                    match api.kv_import(&store, &import).await {
                        Ok(done) => {
                            imported += done.imported;
                            break;
                        }
                        Err(error)
                            if error.status() == Some(reqwest::StatusCode::TOO_MANY_REQUESTS)
                                && waits < MAX_RATE_WAITS =>
                        {
                            waits += 1;
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
            }
            println!("{imported} keys imported into {store}");
        }
    }
    Ok(())
}

pub async fn secret(command: SecretCommand) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    match command {
        SecretCommand::Set { name, value } => {
            let value = match value {
                Some(value) => value,
                None => {
                    let mut value = String::new();
                    std::io::stdin()
                        .read_to_string(&mut value)
                        .context("reading the secret from standard input")?;
                    value.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            api.set_secret(&name, &value).await?;
            println!("secret {name} set");
        }
        SecretCommand::List => {
            for secret in api.secrets().await? {
                println!("{}", secret.name);
            }
        }
        SecretCommand::Delete { name } => {
            api.delete_secret(&name).await?;
            println!("secret {name} deleted");
        }
    }
    Ok(())
}
