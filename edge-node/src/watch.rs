//! `edge-node serve --watch`: the dev loop's node. Every service's module
//! file (and the config file, when there is one) is polled; once a change
//! has settled, the services are installed again, which swaps the routing
//! table whole. Requests in flight keep the module they started with and
//! finish on it, streaming included; a module that does not compile is
//! logged and the one before keeps serving.
//!
//! Polling, not file-system events: a build writes its output in several
//! steps (and editors replace files), and a change is taken only once two
//! polls in a row see the same size and modification time, so a
//! half-written module is never loaded.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use edge_config::ServiceConfig;

use crate::node::Node;

/// How often the watched files are looked at.
pub const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What is served again when a watched file changes: the services, with the
/// directory their relative paths are resolved against.
pub type Reload = Box<dyn FnMut() -> anyhow::Result<(Vec<ServiceConfig>, PathBuf)> + Send>;

/// The size, modification time, change time and inode of each watched
/// file (`None`: missing): a rebuild of the same size within one tick of
/// the clock still changes the inode (a rename) or the change time.
type Fingerprint = Vec<Option<(u64, SystemTime, i64, u64)>>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    paths
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            let changed = metadata.ctime() * 1_000_000_000 + metadata.ctime_nsec();
            Some((
                metadata.len(),
                metadata.modified().ok()?,
                changed,
                metadata.ino(),
            ))
        })
        .collect()
}

/// The files to watch for `services`: each module, and the config file.
pub fn watched_files(
    services: &[ServiceConfig],
    base_dir: &Path,
    config_file: Option<&Path>,
) -> Vec<PathBuf> {
    services
        .iter()
        .map(|service| base_dir.join(&service.module))
        .chain(config_file.map(Path::to_path_buf))
        .collect()
}

/// Installs the services `reload` gives whenever a watched file changed and
/// settled, until the task is dropped. `paths` are watched; a reload may
/// name other module files, and then those are watched from then on.
pub async fn serve_changes(
    node: Node,
    mut paths: Vec<PathBuf>,
    config_file: Option<PathBuf>,
    mut reload: Reload,
) {
    let mut served = fingerprint(&paths);
    let mut last_seen = served.clone();
    loop {
        tokio::time::sleep(WATCH_POLL_INTERVAL).await;
        let seen = fingerprint(&paths);
        let settled = seen == last_seen;
        last_seen = seen.clone();
        if !settled || seen == served {
            continue;
        }
        // Taken as served whatever happens next: a broken module is not
        // retried on every poll, only when it changes again.
        served = seen;
        match reload() {
            Ok((services, base_dir)) => match node.install_services(&services, &base_dir).await {
                Ok(()) => {
                    tracing::info!(
                        services = services.len(),
                        "module changed: serving the new build"
                    );
                    let now_watched = watched_files(&services, &base_dir, config_file.as_deref());
                    if now_watched != paths {
                        paths = now_watched;
                        served = fingerprint(&paths);
                        last_seen = served.clone();
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "the changed module does not load; the previous one keeps serving");
                }
            },
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "the changed config does not load; the previous one keeps serving");
            }
        }
    }
}
