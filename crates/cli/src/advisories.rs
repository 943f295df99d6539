//! `gantry advisory ...` and `gantry artifact policy ...`: the offline vulnerability
//! database and the policy built on it. OSV exports are read here (a .zip of one JSON
//! record per file, as OSV publishes them per ecosystem), then sent in batches so that a
//! large export never needs one huge request.

use std::io::Read;
use std::path::{Path, PathBuf};

use client::Client;
use model::scan::{
    Advisory, ArtifactPolicy, BlockAt, DatabaseStatus, Event, LoadAdvisories, LoadReport,
    ScanReport,
};
use serde_json::Value;

use crate::input::invalid;
use crate::output::{print, t, table};
use crate::{AdvisoryCmd, ArtifactPolicyCmd, CliError};

/// Records per request, and (roughly) bytes per request: below the server's limits.
const BATCH_RECORDS: usize = 1_000;
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest single record read.
const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

fn io_err(p: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::usage(format!("cannot read {}: {e}", p.display()))
}

/// Collects records and sends them in batches.
struct Loader<'a> {
    c: &'a Client,
    batch: Vec<Value>,
    bytes: usize,
    total: LoadReport,
}

impl Loader<'_> {
    async fn add(&mut self, p: &Path, raw: &[u8]) -> Result<(), CliError> {
        let v: Value = serde_json::from_slice(raw)
            .map_err(|e| invalid(format!("{} is not JSON: {e}", p.display())))?;
        let records = match v {
            Value::Array(items) => items,
            one => vec![one],
        };
        // Each record's share of the file: close enough to its size in the request.
        let share = raw.len() / records.len().max(1);
        for r in records {
            self.bytes += share;
            self.batch.push(r);
            if self.batch.len() >= BATCH_RECORDS || self.bytes >= BATCH_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), CliError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let body = LoadAdvisories {
            advisories: std::mem::take(&mut self.batch),
        };
        self.bytes = 0;
        let r: LoadReport = self.c.post("/v1/advisories", &body).await?;
        let t = &mut self.total;
        t.received += r.received;
        t.loaded += r.loaded;
        t.unchanged += r.unchanged;
        t.withdrawn += r.withdrawn;
        t.ignored += r.ignored;
        for x in r.rejected {
            if t.rejected.len() < 20 {
                t.rejected.push(x);
            }
        }
        Ok(())
    }

    async fn path(&mut self, p: &Path) -> Result<(), CliError> {
        let meta = std::fs::metadata(p).map_err(|e| io_err(p, e))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| io_err(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                let is_json = e.extension().is_some_and(|x| x == "json");
                if e.is_dir() || is_json {
                    Box::pin(self.path(&e)).await?;
                }
            }
            return Ok(());
        }
        let mut f = std::fs::File::open(p).map_err(|e| io_err(p, e))?;
        let mut magic = [0u8; 4];
        let zipped = f.read_exact(&mut magic).is_ok() && magic == *b"PK\x03\x04";
        if !zipped {
            if meta.len() > 64 * MAX_RECORD_BYTES {
                return Err(invalid(format!(
                    "{} is too large for one JSON file",
                    p.display()
                )));
            }
            let raw = std::fs::read(p).map_err(|e| io_err(p, e))?;
            return self.add(p, &raw).await;
        }
        let f = std::fs::File::open(p).map_err(|e| io_err(p, e))?;
        let mut z = zip::ZipArchive::new(f).map_err(|e| io_err(p, e))?;
        for i in 0..z.len() {
            let raw = {
                let entry = z.by_index(i).map_err(|e| io_err(p, e))?;
                if !entry.is_file() || !entry.name().ends_with(".json") {
                    continue;
                }
                let name = entry.name().to_string();
                let mut raw = Vec::new();
                entry
                    .take(MAX_RECORD_BYTES + 1)
                    .read_to_end(&mut raw)
                    .map_err(|e| io_err(p, format!("{name}: {e}")))?;
                if raw.len() as u64 > MAX_RECORD_BYTES {
                    return Err(invalid(format!("{}: {name} is too large", p.display())));
                }
                raw
            };
            self.add(p, &raw).await?;
        }
        Ok(())
    }
}

fn events(e: &[Event]) -> String {
    e.iter()
        .map(|e| match e {
            Event::Introduced(v) => format!(">={v}"),
            Event::Fixed(v) => format!("<{v}"),
            Event::LastAffected(v) => format!("<={v}"),
            Event::Limit(v) => format!("limit {v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(c: &Client, cmd: AdvisoryCmd) -> Result<(), CliError> {
    match cmd {
        AdvisoryCmd::Load { paths, out } => {
            let mut l = Loader {
                c,
                batch: Vec::new(),
                bytes: 0,
                total: LoadReport::default(),
            };
            for p in &paths {
                l.path(p).await?;
            }
            l.flush().await?;
            let r = l.total;
            let mut rows = vec![vec![
                r.received.to_string(),
                r.loaded.to_string(),
                r.unchanged.to_string(),
                r.withdrawn.to_string(),
                r.ignored.to_string(),
                r.rejected.len().to_string(),
            ]];
            for x in &r.rejected {
                rows.push(vec![format!("  rejected: {x}")]);
            }
            print(
                out.output,
                &r,
                &[
                    "received",
                    "loaded",
                    "unchanged",
                    "withdrawn",
                    "ignored",
                    "rejected",
                ],
                rows,
            )
        }
        AdvisoryCmd::Status(out) => {
            let s: DatabaseStatus = c.get("/v1/advisories").await?;
            let mut rows = vec![vec![
                "(all)".to_string(),
                s.advisories.to_string(),
                s.loaded_at.map(t).unwrap_or_else(|| "never".into()),
            ]];
            for (eco, n) in &s.by_ecosystem {
                rows.push(vec![eco.clone(), n.to_string(), String::new()]);
            }
            print(out.output, &s, &["ecosystem", "advisories", "loaded"], rows)
        }
        AdvisoryCmd::Show { id, out } => {
            if id.is_empty() || id.contains(['/', '?', '#', '%']) {
                return Err(invalid(format!("invalid advisory id {id:?}")));
            }
            let a: Advisory = c.get(&format!("/v1/advisories/{id}")).await?;
            let mut rows = vec![vec![
                a.id.clone(),
                a.severity.as_str().to_string(),
                a.score.map(|s| s.to_string()).unwrap_or_default(),
                a.aliases.join(","),
                a.summary.clone(),
            ]];
            for x in &a.affected {
                let mut what: Vec<String> = x.ranges.iter().map(|r| events(&r.events)).collect();
                if !x.versions.is_empty() {
                    what.push(format!("versions {}", x.versions.join(",")));
                }
                rows.push(vec![
                    format!("  {} {}", x.ecosystem.as_str(), x.package),
                    what.join("; "),
                ]);
            }
            print(
                out.output,
                &a,
                &["advisory", "severity", "score", "aliases", "summary"],
                rows,
            )
        }
    }
}

fn block(s: Option<String>, was: BlockAt) -> Result<BlockAt, CliError> {
    match s {
        None => Ok(was),
        Some(s) => Ok(BlockAt::parse(&s)?),
    }
}

fn block_str(b: BlockAt) -> String {
    serde_json::to_value(b)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub async fn policy(c: &Client, cmd: ArtifactPolicyCmd) -> Result<(), CliError> {
    let (p, out) = match cmd {
        ArtifactPolicyCmd::Show(out) => {
            (c.get::<ArtifactPolicy>("/v1/artifact-policy").await?, out)
        }
        ArtifactPolicyCmd::Set {
            production,
            certification,
            staging,
            development,
            out,
        } => {
            let was: ArtifactPolicy = c.get("/v1/artifact-policy").await?;
            let p = ArtifactPolicy {
                production: block(production, was.production)?,
                certification: block(certification, was.certification)?,
                staging: block(staging, was.staging)?,
                development: block(development, was.development)?,
            };
            (
                c.put::<_, ArtifactPolicy>("/v1/artifact-policy", &p)
                    .await?,
                out,
            )
        }
    };
    let rows = vec![vec![
        block_str(p.production),
        block_str(p.certification),
        block_str(p.staging),
        block_str(p.development),
    ]];
    print(
        out.output,
        &p,
        &["production", "certification", "staging", "development"],
        rows,
    )
}

/// The scan part of `artifact show`, as a table.
pub fn scan_table(s: &ScanReport) -> String {
    let mut out = String::new();
    let lockfiles = if s.lockfiles.is_empty() {
        "no lockfile".to_string()
    } else {
        s.lockfiles.join(", ")
    };
    out.push_str(&format!(
        "\nscan: {} package(s) from {lockfiles}; {} finding(s); database: {} advisories\n",
        s.packages,
        s.findings.len(),
        s.database_advisories
    ));
    if s.database_advisories == 0 {
        out.push_str("  no vulnerability database is loaded: see `gantry advisory load`\n");
    }
    for u in &s.unreadable {
        out.push_str(&format!("  not read: {u}\n"));
    }
    if !s.unpinned.is_empty() {
        out.push_str(&format!(
            "  not pinned (not checked): {}\n",
            s.unpinned.join(", ")
        ));
    }
    if !s.findings.is_empty() {
        let rows: Vec<Vec<String>> = s
            .findings
            .iter()
            .map(|f| {
                vec![
                    f.severity.as_str().to_string(),
                    f.advisory.clone(),
                    format!("{} {}", f.ecosystem.as_str(), f.package),
                    f.version.clone(),
                    f.fixed.clone().unwrap_or_default(),
                    f.summary.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "severity", "advisory", "package", "version", "fixed", "summary",
            ],
            &rows,
        ));
    }
    out
}
