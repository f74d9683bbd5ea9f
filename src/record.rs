//! `tripwire record`: dump live topics into recording files. (Being written.)

use std::path::PathBuf;

/// `tripwire record` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    pub brokers: String,
    /// Topics to record, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "tracking,prices,stock,catalog")]
    pub topics: Vec<String>,
    /// Directory to write one `<topic>.jsonl` per topic into.
    #[arg(long)]
    pub output: PathBuf,
}
