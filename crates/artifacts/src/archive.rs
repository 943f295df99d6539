//! Reading artifact archives (.tar.gz): the manifest at push, unpacking at deploy.
//!
//! Only regular files and directories are accepted: no links, devices or FIFOs, no absolute
//! paths, no `..`. Sizes and file counts are bounded. This module must never write outside
//! the directory it unpacks into.

use std::io::Read;
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use model::artifacts::{ManifestEntry, MAX_FILES, MAX_UNPACKED_BYTES};
use sha2::{Digest, Sha256};

use crate::{ArtifactError, Result};

fn invalid(m: impl Into<String>) -> ArtifactError {
    ArtifactError::Invalid(m.into())
}

/// A safe relative path of an entry, or an error naming it.
fn entry_path(raw: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| invalid("an entry's path is not UTF-8"))?
                    .to_string(),
            ),
            Component::CurDir => {}
            _ => {
                return Err(invalid(format!(
                    "entry {:?} leaves the archive's directory (absolute or ..)",
                    raw.display()
                )))
            }
        }
    }
    Ok(parts.join("/"))
}

/// Walks the archive, calling `file` for each regular file with its path and reader.
fn walk(
    bytes: &[u8],
    mut file: impl FnMut(&str, u32, &mut dyn Read) -> Result<()>,
    mut dir: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(invalid(
            "the artifact is not a .tar.gz archive (no gzip header); push a directory or a .tar.gz",
        ));
    }
    let mut ar = tar::Archive::new(GzDecoder::new(bytes));
    let entries = ar
        .entries()
        .map_err(|_| invalid("the artifact is not a .tar.gz archive"))?;
    let (mut files, mut total) = (0usize, 0u64);
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("the archive is damaged: {e}")))?;
        let path = entry
            .path()
            .map_err(|_| invalid("an entry has an unreadable path"))?
            .into_owned();
        let rel = entry_path(&path)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                files += 1;
                total += entry.size();
                if files > MAX_FILES {
                    return Err(invalid(format!("more than {MAX_FILES} files")));
                }
                if total > MAX_UNPACKED_BYTES {
                    return Err(ArtifactError::TooLarge(format!(
                        "unpacked, the artifact is larger than {MAX_UNPACKED_BYTES} bytes"
                    )));
                }
                if rel.is_empty() {
                    return Err(invalid("a file entry has an empty path"));
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                file(&rel, mode, &mut entry)?;
            }
            tar::EntryType::Directory => {
                if !rel.is_empty() {
                    dir(&rel)?;
                }
            }
            // PAX/GNU metadata entries are handled by the tar crate itself.
            tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader
            | tar::EntryType::GNULongName => {}
            other => {
                return Err(invalid(format!(
                    "entry {rel:?} is a {other:?}; only files and directories are allowed"
                )))
            }
        }
    }
    if files == 0 {
        return Err(invalid("the artifact holds no file"));
    }
    Ok(())
}

/// What a push reads from an archive.
pub struct Contents {
    /// Every file with its size, SHA-256 and executable bit, by path.
    pub manifest: Vec<ManifestEntry>,
    /// The lockfiles it carries (path, content), for the vulnerability scan.
    pub lockfiles: Vec<(String, Vec<u8>)>,
    /// Lockfiles too large to read.
    pub too_large: Vec<String>,
}

/// Reads an archive's manifest and lockfiles.
pub fn manifest(bytes: &[u8]) -> Result<Contents> {
    let mut out = Vec::new();
    let mut lockfiles = Vec::new();
    let mut too_large = Vec::new();
    walk(
        bytes,
        |path, mode, r| {
            let damaged =
                |e: std::io::Error| invalid(format!("the archive is damaged at {path}: {e}"));
            let mut h = Sha256::new();
            let keep = scan::is_lockfile(path);
            let mut kept = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            let mut n = 0u64;
            loop {
                let got = r.read(&mut buf).map_err(damaged)?;
                if got == 0 {
                    break;
                }
                h.update(&buf[..got]);
                n += got as u64;
                if keep && n <= scan::MAX_LOCKFILE_BYTES {
                    kept.extend_from_slice(&buf[..got]);
                }
            }
            if keep {
                if n <= scan::MAX_LOCKFILE_BYTES {
                    lockfiles.push((path.to_string(), kept));
                } else {
                    too_large.push(path.to_string());
                }
            }
            out.push(ManifestEntry {
                path: path.to_string(),
                size: n,
                sha256: hex::encode(h.finalize()),
                executable: mode & 0o100 != 0,
            });
            Ok(())
        },
        |_| Ok(()),
    )?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Contents {
        manifest: out,
        lockfiles,
        too_large,
    })
}

/// Unpacks an archive into `dir` (which must exist), keeping the owner's executable bit.
pub fn unpack(bytes: &[u8], dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |p: &Path, e: std::io::Error| invalid(format!("cannot unpack {}: {e}", p.display()));
    walk(
        bytes,
        |path, mode, r| {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            let mut f = std::fs::File::create(&target).map_err(|e| io(&target, e))?;
            std::io::copy(r, &mut f).map_err(|e| io(&target, e))?;
            let perm = if mode & 0o100 != 0 { 0o750 } else { 0o640 };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(perm))
                .map_err(|e| io(&target, e))
        },
        |path| {
            let target = dir.join(path);
            std::fs::create_dir_all(&target).map_err(|e| io(&target, e))
        },
    )
}
