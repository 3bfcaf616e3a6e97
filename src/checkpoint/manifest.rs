//! The manifest: the one file that makes a checkpoint exist. It is written last, after every
//! state file, and lists those files with their sizes and checksums, where each source stood,
//! and the plan the state belongs to. It carries a checksum of itself, so a torn or edited
//! manifest is found and the previous checkpoint used instead.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::error::{Result, VeloError};

/// The manifest format written by this build.
const FORMAT_VERSION: u64 = 2;
/// Format 1 had one source position (`source`) where 2 has a list (`sources`).
const SINGLE_SOURCE_VERSION: u64 = 1;

/// Where a source stood at a checkpoint: the next record to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePosition {
    /// Per partition of `topic`, the next offset to read.
    Kafka {
        topic: String,
        offsets: BTreeMap<i32, i64>,
    },
}

/// One state file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    /// The operator whose state it holds ("2-aggregate"; "clock" for the event clock).
    pub operator: String,
    /// The partition worker that wrote it.
    pub partition: usize,
    /// Path relative to the state store's root.
    pub path: String,
    pub bytes: u64,
    pub checksum: String,
}

/// A complete checkpoint of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub job: String,
    pub epoch: u64,
    /// Milliseconds since the Unix epoch when it was written.
    pub created_ms: i64,
    /// Partition workers of the run that wrote it.
    pub partitions: usize,
    /// The plan's state shape (`PlannedQuery::state_shape`), line by line.
    pub plan: Vec<String>,
    /// Checksum of `plan`.
    pub fingerprint: String,
    /// Where each Kafka input stood, in the job's input order.
    pub sources: Vec<SourcePosition>,
    /// The last epoch whose output the sink had committed when this checkpoint was taken
    /// (None: none). An exactly-once sink's output of this epoch itself is still pending.
    pub output_committed: Option<u64>,
    pub files: Vec<StateFile>,
}

/// A content checksum (BLAKE3, hex).
pub fn checksum(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The fingerprint of a plan's state shape.
pub fn fingerprint(plan: &[String]) -> String {
    checksum(plan.join("\n").as_bytes())
}

/// What changed between the plan a checkpoint was taken with and the current one (None:
/// nothing did).
pub fn plan_change(checkpointed: &[String], current: &[String]) -> Option<String> {
    let differs = checkpointed
        .iter()
        .zip(current)
        .find(|(old, new)| old != new);
    match differs {
        Some((old, new)) => Some(format!("was `{old}`, is now `{new}`")),
        None if checkpointed.len() != current.len() => Some(format!(
            "the plan had {} parts and now has {}",
            checkpointed.len(),
            current.len()
        )),
        None => None,
    }
}

impl Manifest {
    /// The manifest as bytes: its JSON body and the body's checksum.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.to_json();
        let text = body.to_string();
        let wrapped = json!({ "manifest": body, "checksum": checksum(text.as_bytes()) });
        let mut bytes = serde_json::to_vec_pretty(&wrapped).unwrap_or_else(|_| text.into_bytes());
        bytes.push(b'\n');
        bytes
    }

    /// Reads a manifest written by [`Self::encode`], checking its checksum.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let wrapped: Value = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("the manifest is not JSON: {e}")))?;
        let body = wrapped
            .get("manifest")
            .ok_or_else(|| corrupt("the manifest has no body".into()))?;
        let expected = wrapped.get("checksum").and_then(Value::as_str);
        if expected != Some(checksum(body.to_string().as_bytes()).as_str()) {
            return Err(corrupt("the manifest's checksum does not match".into()));
        }
        Self::from_json(body)
    }

    fn to_json(&self) -> Value {
        let sources: Vec<Value> = self
            .sources
            .iter()
            .map(|s| match s {
                SourcePosition::Kafka { topic, offsets } => {
                    let offsets: Map<String, Value> = offsets
                        .iter()
                        .map(|(p, o)| (p.to_string(), json!(o)))
                        .collect();
                    json!({ "kind": "kafka", "topic": topic, "offsets": offsets })
                }
            })
            .collect();
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                json!({
                    "operator": f.operator,
                    "partition": f.partition,
                    "path": f.path,
                    "bytes": f.bytes,
                    "checksum": f.checksum,
                })
            })
            .collect();
        json!({
            "version": FORMAT_VERSION,
            "job": self.job,
            "epoch": self.epoch,
            "created_ms": self.created_ms,
            "partitions": self.partitions,
            "fingerprint": self.fingerprint,
            "plan": self.plan,
            "sources": sources,
            "output_committed": self.output_committed,
            "files": files,
        })
    }

    fn from_json(v: &Value) -> Result<Self> {
        let version = v.get("version").and_then(Value::as_u64);
        let listed = match version {
            Some(FORMAT_VERSION) => v.get("sources").and_then(Value::as_array).cloned(),
            Some(SINGLE_SOURCE_VERSION) => Some(v.get("source").into_iter().cloned().collect()),
            _ => {
                return Err(corrupt(format!(
                    "manifest format {version:?}; this build reads {SINGLE_SOURCE_VERSION} and \
                     {FORMAT_VERSION}"
                )))
            }
        };
        let sources = listed
            .ok_or_else(|| corrupt("the manifest lists no sources".into()))?
            .iter()
            .filter(|s| !s.is_null())
            .map(source_position)
            .collect::<Result<Vec<_>>>()?;
        let files = v
            .get("files")
            .and_then(Value::as_array)
            .ok_or_else(|| corrupt("the manifest lists no files".into()))?
            .iter()
            .map(|f| {
                Ok(StateFile {
                    operator: text(f, "operator")?,
                    partition: number(f, "partition")? as usize,
                    path: text(f, "path")?,
                    bytes: number(f, "bytes")?,
                    checksum: text(f, "checksum")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let plan = v
            .get("plan")
            .and_then(Value::as_array)
            .ok_or_else(|| corrupt("the manifest has no plan".into()))?
            .iter()
            .map(|l| l.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt("the plan is not text".into()))?;
        Ok(Manifest {
            job: text(v, "job")?,
            epoch: number(v, "epoch")?,
            created_ms: v.get("created_ms").and_then(Value::as_i64).unwrap_or(0),
            partitions: number(v, "partitions")? as usize,
            fingerprint: text(v, "fingerprint")?,
            plan,
            sources,
            output_committed: v.get("output_committed").and_then(Value::as_u64),
            files,
        })
    }
}

/// One source's position as `to_json` writes it.
fn source_position(s: &Value) -> Result<SourcePosition> {
    let offsets = s
        .get("offsets")
        .and_then(Value::as_object)
        .ok_or_else(|| corrupt("the source position has no offsets".into()))?
        .iter()
        .map(|(p, o)| {
            Ok((
                p.parse::<i32>()
                    .map_err(|_| corrupt(format!("partition '{p}'")))?,
                o.as_i64()
                    .ok_or_else(|| corrupt(format!("offset of {p}")))?,
            ))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    Ok(SourcePosition::Kafka {
        topic: text(s, "topic")?,
        offsets,
    })
}

fn text(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| corrupt(format!("'{key}' is missing")))
}

fn number(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| corrupt(format!("'{key}' is missing")))
}

fn corrupt(reason: String) -> VeloError {
    VeloError::Execution(format!("corrupt checkpoint manifest: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let plan = vec![
            "input: k Utf8".to_string(),
            "0-aggregate: GROUP BY k".to_string(),
        ];
        Manifest {
            job: "totals".into(),
            epoch: 7,
            created_ms: 1_700_000_000_000,
            partitions: 4,
            fingerprint: fingerprint(&plan),
            plan,
            sources: vec![SourcePosition::Kafka {
                topic: "rin".into(),
                offsets: BTreeMap::from([(0, 120), (3, 9)]),
            }],
            output_committed: Some(6),
            files: vec![StateFile {
                operator: "0-aggregate".into(),
                partition: 2,
                path: "totals/chk-0000000007/0-aggregate/part-2.arrow".into(),
                bytes: 812,
                checksum: checksum(b"state"),
            }],
        }
    }

    #[test]
    fn a_manifest_round_trips_and_an_edit_is_caught() {
        let m = manifest();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).expect("decode"), m);
        let edited = String::from_utf8(bytes)
            .expect("utf8")
            .replace("\"rin\"", "\"out\"");
        let err = Manifest::decode(edited.as_bytes()).expect_err("edited");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(Manifest::decode(b"{\"manifest\":").is_err(), "torn");
    }

    /// A checkpoint written before jobs read several topics has one `source`: it reads as a
    /// list of one.
    #[test]
    fn a_format_1_manifest_with_one_source_still_reads() {
        let m = manifest();
        let mut body = m.to_json();
        let sources = body["sources"].clone();
        let object = body.as_object_mut().expect("an object");
        object.remove("sources");
        object.insert("source".into(), sources[0].clone());
        object.insert("version".into(), json!(SINGLE_SOURCE_VERSION));
        let text = body.to_string();
        let wrapped = json!({ "manifest": body, "checksum": checksum(text.as_bytes()) });
        let bytes = serde_json::to_vec(&wrapped).expect("json");
        assert_eq!(Manifest::decode(&bytes).expect("decode"), m);
    }

    #[test]
    fn a_plan_change_names_the_part_that_changed() {
        let old = manifest().plan;
        let mut new = old.clone();
        new[1] = "0-aggregate: GROUP BY k, j".into();
        let change = plan_change(&old, &new).expect("changed");
        assert!(change.contains("GROUP BY k, j"), "{change}");
        assert_eq!(plan_change(&old, &old), None);
        assert!(plan_change(&old, &old[..1]).is_some());
    }
}
