//! `MockKafka`: librdkafka's in-process mock cluster, a real Kafka protocol peer that needs no
//! broker. Tests use it, and `velo-sql deploy-app --mock-kafka` runs apps against it.

use std::ffi::{CStr, CString};

use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

use super::source::kafka_error;
use crate::error::{Result, VeloError};

/// A mock cluster, alive as long as this value.
pub struct MockKafka {
    /// The client that owns the cluster (librdkafka ties the mock's life to one client).
    owner: BaseProducer,
    bootstrap: String,
}

impl MockKafka {
    /// Starts a cluster of `brokers` brokers; consumer groups rebalance without the usual
    /// initial delay.
    pub fn start(brokers: u32) -> Result<Self> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .create()
            .map_err(|e| kafka_error("starting the mock cluster", e))?;
        let cluster = cluster_of(&owner)?;
        // SAFETY: `cluster` belongs to `owner`, which is alive; the returned string is owned by
        // the cluster and copied before anything else runs.
        let bootstrap = unsafe {
            rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
            CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster))
                .to_string_lossy()
                .into_owned()
        };
        Ok(MockKafka { owner, bootstrap })
    }

    /// The `bootstrap.servers` to connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the mock's own call: admin requests are not served by it).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let cluster = cluster_of(&self.owner)?;
        let name = CString::new(topic)
            .map_err(|_| VeloError::Config(format!("topic name '{topic}' contains NUL")))?;
        // SAFETY: the cluster is alive (owned by `self.owner`) and `name` outlives the call.
        let err =
            unsafe { rdsys::rd_kafka_mock_topic_create(cluster, name.as_ptr(), partitions, 1) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(VeloError::Execution(format!(
                "Kafka: creating mock topic '{topic}' failed: {}",
                rdkafka::error::RDKafkaErrorCode::from(err)
            )));
        }
        Ok(())
    }
}

fn cluster_of(owner: &BaseProducer) -> Result<*mut rdsys::rd_kafka_mock_cluster_t> {
    // SAFETY: the pointer is the live client's own handle.
    let cluster = unsafe { rdsys::rd_kafka_handle_mock_cluster(owner.client().native_ptr()) };
    if cluster.is_null() {
        return Err(VeloError::Execution(
            "Kafka: the client has no mock cluster".into(),
        ));
    }
    Ok(cluster)
}
