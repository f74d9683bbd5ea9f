//! The live job: Kafka in, triggers out. (Being written.)

use std::net::SocketAddr;

/// `tripwire run` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    pub brokers: String,
    /// Where to start reading: `earliest`, `latest`, or a time in ms since the epoch.
    #[arg(long, default_value = "latest")]
    pub start: String,
    /// Prometheus endpoint address.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
}
