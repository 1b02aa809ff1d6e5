//! `tilepipe status [--json]`: where the database stands against its feed.
//!
//! Output and exit codes follow `osm2pgsql-replication status` so that
//! monitoring written for it keeps working: 0 ok, 1 no replication state,
//! 2 not set up, 3 the server's state could not be downloaded; and 4 (not
//! in osm2pgsql) `tilepipe run` keeps failing to apply the next batch.
//! That failure is read from the database, where the daemon records it
//! (see [`crate::daemon::APPLY_FAILURE_PROPERTY`]): status needs no access
//! to the daemon's HTTP port, and sees it even while the daemon restarts.
//!
//! With `expire.nodes`, each render node follows: its backlog, read from
//! the backlog table, and how far its standby's replay is behind. Neither
//! changes the exit code: a standby that cannot be asked is shown as such.

use crate::config::Config;
use crate::expire::nodes::{backlog_summary, replay_lag_bytes, BacklogSummary};
use crate::redact::secrets;
use crate::replication::client::{FeedClient, RetryPolicy};
use crate::replication::position::{read_position, read_property, Position, StoredPosition};
use crate::replication::state::format_timestamp;
use crate::replication::ReplicationState;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status as one JSON object (osm2pgsql-replication's shape).
    #[arg(long)]
    json: bool,
}

/// The outcome, with everything either output needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    NoState {
        error: String,
    },
    NotSetUp {
        error: String,
    },
    ServerUnreachable {
        local: Position,
        error: String,
        apply_failure: Option<ApplyFailure>,
    },
    Ok {
        local: Position,
        server: ReplicationState,
        apply_failure: Option<ApplyFailure>,
    },
}

/// The batch `tilepipe run` keeps failing to apply, as it recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyFailure {
    /// The recorded JSON object (since, first_sequence, last_sequence,
    /// attempts, error).
    pub record: serde_json::Value,
}

impl ApplyFailure {
    fn text(&self) -> String {
        let r = &self.record;
        format!(
            "Applying sequences {}..={} is failing since {} ({} attempt(s)): {}\n",
            r["first_sequence"],
            r["last_sequence"],
            r["since"].as_str().unwrap_or("?"),
            r["attempts"],
            r["error"].as_str().unwrap_or("?")
        )
    }
}

impl Status {
    pub fn code(&self) -> u8 {
        match self {
            Status::Ok {
                apply_failure: Some(_),
                ..
            }
            | Status::ServerUnreachable {
                apply_failure: Some(_),
                ..
            } => 4,
            Status::Ok { .. } => 0,
            Status::NoState { .. } => 1,
            Status::NotSetUp { .. } => 2,
            Status::ServerUnreachable { .. } => 3,
        }
    }

    /// JSON with Python's default separators and 2.x key order, as
    /// `osm2pgsql-replication status --json` prints it.
    pub fn to_json(&self, now: DateTime<Utc>) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("strings always serialise");
        let age = |ts: DateTime<Utc>| (now - ts).num_seconds();
        let mut out = format!("{{\"status\": {}", self.code());
        match self {
            Status::NoState { error } | Status::NotSetUp { error } => {
                let _ = write!(out, ", \"error\": {}", q(error));
            }
            Status::ServerUnreachable { local, error, .. } => {
                let _ = write!(
                    out,
                    ", \"error\": {}, \"server\": {{\"base_url\": {}}}, \"local\": {{\"sequence\": {}, \"timestamp\": {}}}",
                    q(error),
                    q(&secrets(&local.base_url)),
                    local.sequence,
                    q(&format_timestamp(local.timestamp))
                );
            }
            Status::Ok { local, server, .. } => {
                let _ = write!(
                    out,
                    ", \"server\": {{\"base_url\": {}, \"sequence\": {}, \"timestamp\": {}, \"age_sec\": {}}}, \"local\": {{\"sequence\": {}, \"timestamp\": {}, \"age_sec\": {}}}",
                    q(&secrets(&local.base_url)),
                    server.sequence,
                    q(&format_timestamp(server.timestamp)),
                    age(server.timestamp),
                    local.sequence,
                    q(&format_timestamp(local.timestamp)),
                    age(local.timestamp)
                );
            }
        }
        if let Status::Ok {
            apply_failure: Some(failure),
            ..
        }
        | Status::ServerUnreachable {
            apply_failure: Some(failure),
            ..
        } = self
        {
            let _ = write!(out, ", \"apply_failure\": {}", failure.record);
        }
        out.push('}');
        out
    }

    /// The four lines osm2pgsql-replication prints, or the error.
    pub fn to_text(&self, now: DateTime<Utc>) -> String {
        let (local, server) = match self {
            Status::NoState { error } | Status::NotSetUp { error } => return format!("{error}\n"),
            Status::ServerUnreachable {
                error,
                apply_failure,
                ..
            } => {
                let failure = apply_failure.as_ref().map(ApplyFailure::text);
                return format!("{error}\n{}", failure.unwrap_or_default());
            }
            Status::Ok {
                local,
                server,
                apply_failure,
            } => {
                if let Some(failure) = apply_failure {
                    return format!(
                        "{}{}",
                        failure.text(),
                        self.clone().without_failure().to_text(now)
                    );
                }
                (local, server)
            }
        };
        let server_age = (now - server.timestamp).num_seconds();
        let local_age = (now - local.timestamp).num_seconds();
        let mut out = format!(
            "Using replication service '{}', which is at sequence {} ( {} )\n\
             Replication server's most recent data is {} old\n",
            secrets(&local.base_url),
            server.sequence,
            format_timestamp(server.timestamp),
            format_span(server_age)
        );
        if local.sequence >= server.sequence {
            out.push_str("Local database is up to date with server\n");
        } else {
            let _ = writeln!(
                out,
                "Local database is {} sequences behind the server, i.e. {}",
                server.sequence - local.sequence,
                format_span(local_age - server_age)
            );
        }
        let _ = writeln!(
            out,
            "Local database's most recent data is {} old",
            format_span(local_age)
        );
        out
    }
}

impl Status {
    fn without_failure(self) -> Status {
        match self {
            Status::Ok { local, server, .. } => Status::Ok {
                local,
                server,
                apply_failure: None,
            },
            other => other,
        }
    }
}

/// "2 day(s) 3 hour(s) 0 minute(s) 5 second(s)": the largest unit first,
/// every smaller unit after it, as osm2pgsql-replication 2.x writes spans.
pub fn format_span(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let mut rest = seconds.unsigned_abs();
    let units = [
        ("week", 7 * 86400),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ];
    let mut parts = Vec::new();
    for (name, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 || !parts.is_empty() {
            parts.push(format!("{n} {name}(s)"));
        }
    }
    parts.push(format!("{rest} second(s)"));
    format!("{sign}{}", parts.join(" "))
}

/// Gathers the status: database first, then one attempt at the server.
pub fn gather(config: &Config) -> anyhow::Result<Status> {
    let mut db = super::connect_db(config)?;
    let local = match read_position(&mut db, &config.database.middle_schema)? {
        StoredPosition::NoTable => {
            return Ok(Status::NoState {
                error: "Cannot find replication status table. Run 'tilepipe init' first.".into(),
            })
        }
        StoredPosition::NotSetUp { reason } => {
            return Ok(Status::NotSetUp {
                error: format!(
                    "Updates not set up correctly ({reason}). Run 'tilepipe init' first."
                ),
            })
        }
        StoredPosition::Set(position) => position,
    };
    let apply_failure = read_property(
        &mut db,
        &config.database.middle_schema,
        crate::daemon::APPLY_FAILURE_PROPERTY,
    )?
    .map(|text| ApplyFailure {
        record: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    });
    drop(db);
    let client = FeedClient::from_config(&local.base_url, &config.replication)?
        .with_retry(RetryPolicy::ONCE);
    let server = super::runtime()?.block_on(client.latest_state_once());
    Ok(match server {
        Ok(server) => Status::Ok {
            local,
            server,
            apply_failure,
        },
        Err(e) => Status::ServerUnreachable {
            error: format!(
                "Unable to download the state information from {}: {e}",
                secrets(&local.base_url)
            ),
            local,
            apply_failure,
        },
    })
}

/// A render node of `expire.nodes`, as status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// The node's name.
    pub name: String,
    /// What waits for it in the backlog table.
    pub backlog: BacklogSummary,
    /// WAL bytes its standby's replay is behind the primary, or why the
    /// standby could not be asked.
    pub replay_lag: Result<u64, String>,
}

impl NodeReport {
    fn text(&self) -> String {
        let backlog = if self.backlog.batches == 0 {
            "nothing pending".to_string()
        } else {
            format!(
                "{} batch(es), {} metatile(s) pending, the oldest for {}",
                self.backlog.batches,
                self.backlog.metatiles,
                format_span(self.backlog.oldest_pending_seconds as i64)
            )
        };
        let standby = match &self.replay_lag {
            Ok(bytes) => format!("standby replay {bytes} byte(s) behind"),
            Err(e) => format!("standby unreachable ({e})"),
        };
        format!("Render node {}: {backlog}; {standby}\n", self.name)
    }

    fn json(&self) -> serde_json::Value {
        let mut value = serde_json::json!({
            "name": self.name,
            "backlog_batches": self.backlog.batches,
            "backlog_metatiles": self.backlog.metatiles,
            "oldest_pending_sec": self.backlog.oldest_pending_seconds as i64,
            "standby_reachable": self.replay_lag.is_ok(),
            "replay_lag_bytes": self.replay_lag.as_ref().ok(),
        });
        if let Err(e) = &self.replay_lag {
            value["standby_error"] = e.clone().into();
        }
        value
    }
}

/// `json` (one object, as [`Status::to_json`] writes it) with a `nodes`
/// array last; unchanged without nodes, so osm2pgsql's shape stays.
pub fn json_with_nodes(mut json: String, nodes: &[NodeReport]) -> String {
    if nodes.is_empty() {
        return json;
    }
    let nodes = serde_json::Value::Array(nodes.iter().map(NodeReport::json).collect());
    json.pop();
    let _ = write!(json, ", \"nodes\": {nodes}}}");
    json
}

/// Each render node of `expire.nodes`: its backlog from the primary, and
/// its standby's replay lag (one attempt, with the delivery's connect
/// timeout).
pub fn gather_nodes(config: &Config) -> anyhow::Result<Vec<NodeReport>> {
    let nodes = &config.expire.nodes;
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut db = super::connect_db(config)?;
    let backlog = backlog_summary(&mut db, &config.database.middle_schema)?;
    Ok(nodes
        .iter()
        .map(|node| NodeReport {
            name: node.name.clone(),
            backlog: backlog.get(&node.name).cloned().unwrap_or_default(),
            replay_lag: replay_lag_bytes(&mut db, node),
        })
        .collect())
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let status = gather(config)?;
    let nodes = gather_nodes(config)?;
    let now = Utc::now();
    if args.json {
        println!("{}", json_with_nodes(status.to_json(now), &nodes));
    } else {
        if status.code() == 0 {
            print!("{}", status.to_text(now));
        } else {
            tracing::error!("{}", status.to_text(now).trim_end());
        }
        for node in &nodes {
            print!("{}", node.text());
        }
    }
    Ok(ExitCode::from(status.code()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ts(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2021, 8, 17, h, m, s).unwrap()
    }

    #[test]
    fn spans_read_like_osm2pgsql() {
        assert_eq!(format_span(27), "27 second(s)");
        assert_eq!(format_span(3600), "1 hour(s) 0 minute(s) 0 second(s)");
        assert_eq!(
            format_span(8 * 86400 + 61),
            "1 week(s) 1 day(s) 0 hour(s) 1 minute(s) 1 second(s)"
        );
        assert_eq!(format_span(-61), "-1 minute(s) 1 second(s)");
    }

    #[test]
    fn json_matches_osm2pgsql_replication() {
        let local = Position {
            base_url: "https://planet.openstreetmap.org/replication/minute/".into(),
            sequence: 4666827,
            timestamp: ts(13, 0, 0),
        };
        let server = ReplicationState {
            sequence: 4675116,
            timestamp: ts(13, 20, 43),
        };
        let now = ts(13, 21, 10);
        let ok = Status::Ok {
            local: local.clone(),
            server,
            apply_failure: None,
        };
        assert_eq!(
            ok.to_json(now),
            "{\"status\": 0, \"server\": {\"base_url\": \"https://planet.openstreetmap.org/replication/minute/\", \"sequence\": 4675116, \"timestamp\": \"2021-08-17T13:20:43Z\", \"age_sec\": 27}, \"local\": {\"sequence\": 4666827, \"timestamp\": \"2021-08-17T13:00:00Z\", \"age_sec\": 1270}}"
        );
        let text = ok.to_text(now);
        assert!(text.contains("Local database is 8289 sequences behind the server, i.e. 20 minute(s) 43 second(s)"), "{text}");
        assert_eq!(text.lines().count(), 4);

        let none = Status::NoState {
            error: "no \"table\"".into(),
        };
        assert_eq!(
            none.to_json(now),
            "{\"status\": 1, \"error\": \"no \\\"table\\\"\"}"
        );
        let down = Status::ServerUnreachable {
            local: local.clone(),
            error: "down".into(),
            apply_failure: None,
        };
        assert!(down
            .to_json(now)
            .starts_with("{\"status\": 3, \"error\": \"down\", \"server\": {\"base_url\": "));

        let failing = Status::Ok {
            local,
            server,
            apply_failure: Some(ApplyFailure {
                record: serde_json::json!({"since": "2021-08-17T13:00:05+00:00", "first_sequence": 4666828, "last_sequence": 4666830, "attempts": 3, "error": "db error: deadlock"}),
            }),
        };
        assert_eq!(failing.code(), 4);
        let json = failing.to_json(now);
        assert!(json.starts_with("{\"status\": 4, \"server\": "), "{json}");
        assert!(json.ends_with(", \"apply_failure\": {\"attempts\":3,\"error\":\"db error: deadlock\",\"first_sequence\":4666828,\"last_sequence\":4666830,\"since\":\"2021-08-17T13:00:05+00:00\"}}"), "{json}");
        let text = failing.to_text(now);
        assert!(text.starts_with("Applying sequences 4666828..=4666830 is failing since 2021-08-17T13:00:05+00:00 (3 attempt(s)): db error: deadlock\n"), "{text}");
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn nodes_follow_the_status() {
        let behind = NodeReport {
            name: "a".into(),
            backlog: BacklogSummary {
                batches: 2,
                metatiles: 180,
                oldest_pending_seconds: 63.4,
            },
            replay_lag: Ok(4096),
        };
        let down = NodeReport {
            name: "b".into(),
            backlog: BacklogSummary::default(),
            replay_lag: Err("connection refused".into()),
        };
        assert_eq!(
            behind.text(),
            "Render node a: 2 batch(es), 180 metatile(s) pending, the oldest for 1 minute(s) 3 second(s); standby replay 4096 byte(s) behind\n"
        );
        assert_eq!(
            down.text(),
            "Render node b: nothing pending; standby unreachable (connection refused)\n"
        );
        let json = json_with_nodes("{\"status\": 1}".into(), &[behind, down]);
        assert_eq!(
            json,
            "{\"status\": 1, \"nodes\": [{\"backlog_batches\":2,\"backlog_metatiles\":180,\"name\":\"a\",\"oldest_pending_sec\":63,\"replay_lag_bytes\":4096,\"standby_reachable\":true},{\"backlog_batches\":0,\"backlog_metatiles\":0,\"name\":\"b\",\"oldest_pending_sec\":0,\"replay_lag_bytes\":null,\"standby_error\":\"connection refused\",\"standby_reachable\":false}]}"
        );
        assert_eq!(json_with_nodes("{}".into(), &[]), "{}");
    }
}
