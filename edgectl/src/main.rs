//! `edgectl`, the tenant CLI: log in once, create and delete services,
//! claim and verify custom domains, deploy a guest (built from source or a
//! ready .wasm), list versions, roll back, read usage and logs, upload TLS
//! certificates, purge the edge cache, manage API tokens, start a project
//! (`init`) and serve it on loopback while it changes (`dev`); operators also
//! create, suspend and resume tenants, approve domains and list nodes.
//!
//! Every command is one or two calls of [`edgectl::client::ApiClient`];
//! this binary parses arguments, keeps credentials and prints answers.

mod args;
mod commands;
mod credentials;
mod guest_build;
mod output;
mod project;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match commands::run(args::Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
