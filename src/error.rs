//! The one error type of velostream, with the context a user needs to fix the input.

use datafusion::error::DataFusionError;

/// Result alias used across velostream.
pub type Result<T, E = VeloError> = std::result::Result<T, E>;

/// Everything that can go wrong, grouped by who has to act on it.
#[derive(Debug, thiserror::Error)]
pub enum VeloError {
    /// The SQL text does not parse or plan; `line`/`column` are 1-based positions in the file.
    #[error("SQL error at line {line}, column {column}: {message}{snippet}")]
    Sql {
        line: u64,
        column: u64,
        message: String,
        /// The offending source line with a caret under the column (empty if unknown).
        snippet: String,
    },
    /// A configuration key or value is wrong (WITH keys, CLI flags, files not found).
    #[error("configuration error: {0}")]
    Config(String),
    /// A record could not be decoded; `location` names file:line or topic/partition/offset.
    #[error("bad record at {location}: {reason}")]
    BadRecord { location: String, reason: String },
    /// A query id that is not deployed.
    #[error("unknown query '{0}'")]
    UnknownQuery(String),
    /// A failure while executing a query.
    #[error("execution error: {0}")]
    Execution(String),
    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An error raised inside DataFusion or Arrow.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
}

impl From<arrow::error::ArrowError> for VeloError {
    fn from(e: arrow::error::ArrowError) -> Self {
        VeloError::DataFusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}

impl VeloError {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        VeloError::Io {
            context: context.into(),
            source,
        }
    }

    /// Process exit code: 2 for bad SQL or configuration, 1 for a failed job.
    pub fn exit_code(&self) -> i32 {
        match self {
            VeloError::Sql { .. } | VeloError::Config(_) => 2,
            _ => 1,
        }
    }
}
