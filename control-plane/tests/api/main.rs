//! The API suite. It runs against SQLite, and also against PostgreSQL when
//! `EDGE_TEST_POSTGRES_URL` names a server (`scripts/test.sh` starts one):
//! each test then runs once per database, each time on a fresh schema.
//! One module per part of the API: tenants, services, domains, the node
//! protocol, and the bounds that keep it flat under load.

mod bounds;
#[path = "../common/mod.rs"]
mod common;
mod domains;
mod nodes;
mod services;
mod tenants;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
