//! `tripwire-courier`: Tripwire's delivery sidecar. It consumes trigger
//! records, decides whether, when and how to contact the user (the pure
//! [`policy`] engine), sends through the configured [`channels`], and writes
//! a receipt for every decision to `deliveries`.
//!
//! Layout: [`model`] (wire types), [`config`] (typed configuration),
//! [`policy`] (pure decisions), [`template`] (content), [`store`] (redb),
//! [`engine`] (batch decisions), [`channels`] and [`sender`] (transport to
//! users), [`runner`] (Kafka), [`telemetry`] (metrics and events),
//! [`testkit`] (local HTTP sink shared by tests and the benchmark).

pub mod channels;
pub mod clock;
pub mod config;
pub mod engine;
/// `[kafka]` client properties, the same source as the job's.
#[path = "../../src/kafka_props.rs"]
pub mod kafka_props;
pub mod model;
pub mod policy;
pub mod runner;
pub mod sender;
pub mod store;
pub mod telemetry;
pub mod template;
#[cfg(feature = "test-hooks")]
pub mod testkit;
