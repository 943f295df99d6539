//! `gantry artifact ...`: the registry. A directory is packed here into a .tar.gz (files
//! and directories only; symbolic links are refused, not followed), then pushed.

use std::path::Path;

use client::Client;
use model::artifacts::{ArtifactInfo, ArtifactRef, MAX_ARTIFACT_BYTES};
use model::types::List;
use model::{Code, Name};

use crate::input::{invalid, read_material};
use crate::output::{print, t};
use crate::{ArtifactCmd, CliError};

const H: &[&str] = &[
    "artifact", "version", "digest", "size", "files", "pushed", "by",
];

fn rows(items: &[ArtifactInfo]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.version.clone(),
                a.digest.chars().take(19).collect(),
                a.size.to_string(),
                a.files.to_string(),
                t(a.created_at),
                a.created_by.clone(),
            ]
        })
        .collect()
}

fn path_of(r: &ArtifactRef) -> String {
    format!(
        "/v1/tenants/{}/artifacts/{}/versions/{}",
        r.tenant, r.name, r.version
    )
}

/// Packs `dir` into a .tar.gz: regular files and directories, sorted, with their modes.
fn pack(dir: &Path) -> Result<Vec<u8>, CliError> {
    let io =
        |p: &Path, e: std::io::Error| CliError::usage(format!("cannot read {}: {e}", p.display()));
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    b.follow_symlinks(false);
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .map_err(|e| io(&d, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| io(&d, e))?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            let ft = e.file_type().map_err(|err| io(&p, err))?;
            if ft.is_symlink() {
                return Err(invalid(format!(
                    "{} is a symbolic link; artifacts hold files and directories only",
                    p.display()
                )));
            } else if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in &files {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        b.append_path_with_name(f, rel).map_err(|e| io(f, e))?;
    }
    if files.is_empty() {
        return Err(invalid(format!("{} holds no file", dir.display())));
    }
    let gz = b
        .into_inner()
        .and_then(|g| g.finish())
        .map_err(|e| CliError::usage(format!("cannot pack {}: {e}", dir.display())))?;
    Ok(gz)
}

pub async fn run(c: &Client, cmd: ArtifactCmd) -> Result<(), CliError> {
    match cmd {
        ArtifactCmd::Push {
            artifact,
            path,
            out,
        } => {
            let r = ArtifactRef::parse(&artifact)?;
            let body = if path.is_dir() {
                pack(&path)?
            } else {
                read_material(
                    Some(&path),
                    MAX_ARTIFACT_BYTES,
                    "artifact",
                    Code::PayloadTooLarge,
                )?
                .to_vec()
            };
            if body.len() > MAX_ARTIFACT_BYTES {
                return Err(CliError {
                    exit_code: Code::PayloadTooLarge.exit_code(),
                    message: format!(
                        "the packed artifact is larger than {MAX_ARTIFACT_BYTES} bytes, the limit"
                    ),
                });
            }
            let x: ArtifactInfo = c.post_bytes(&path_of(&r), "application/gzip", body).await?;
            print(out.output, &x, H, rows(std::slice::from_ref(&x)))
        }
        ArtifactCmd::List { tenant, out } => {
            let tn = Name::parse(&tenant)?;
            let l: List<ArtifactInfo> = c.get(&format!("/v1/tenants/{tn}/artifacts")).await?;
            print(out.output, &l, H, rows(&l.items))
        }
        ArtifactCmd::Show { artifact, out } => {
            let r = ArtifactRef::parse(&artifact)?;
            let x: ArtifactInfo = c.get(&path_of(&r)).await?;
            let mut rows = rows(std::slice::from_ref(&x));
            for f in &x.manifest {
                rows.push(vec![
                    format!("  {}", f.path),
                    if f.executable {
                        "x".into()
                    } else {
                        String::new()
                    },
                    format!("sha256:{}", &f.sha256[..12.min(f.sha256.len())]),
                    f.size.to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
            print(out.output, &x, H, rows)?;
            if let (crate::Format::Table, Some(s)) = (out.output, &x.scan) {
                print!("{}", crate::advisories::scan_table(s));
            }
            Ok(())
        }
        ArtifactCmd::Pull { artifact, to } => {
            let r = ArtifactRef::parse(&artifact)?;
            let bytes = c.get_bytes(&format!("{}/blob", path_of(&r))).await?;
            std::fs::write(&to, &bytes)
                .map_err(|e| CliError::usage(format!("cannot write {}: {e}", to.display())))?;
            println!("{r}: {} bytes written to {}", bytes.len(), to.display());
            Ok(())
        }
        ArtifactCmd::Policy(cmd) => crate::advisories::policy(c, cmd).await,
        ArtifactCmd::Delete { artifact } => {
            let r = ArtifactRef::parse(&artifact)?;
            c.delete(&path_of(&r)).await?;
            println!("artifact {r} deleted");
            Ok(())
        }
    }
}
