//! The integration tests: one binary, run against the real stack (scripts/test.sh).

mod audit;
mod auth;
mod browser;
mod client;
mod common;
mod guest;
mod hosts;
mod images;
mod instances;
mod lifecycle;
mod metrics;
mod nics;
mod openapi;
mod operations;
mod outages;
mod provision;
mod quotas;
mod reconcile;
mod replicas;
mod schema;
mod secrets;
mod server;
mod snapshots;
mod sweep;
mod uploads;
mod volumes;
