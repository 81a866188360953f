//! Where spec files come from: compiled into the binary, or read from a directory.
//!
//! Only this module touches the file system for specs; [`crate::catalog::load`] stays pure.

use std::collections::BTreeMap;
use std::path::Path;

use crate::catalog::{self, Catalog, SpecErrors};

/// The profile used when none is asked for.
pub const DEFAULT_PROFILE: &str = "fcm";

macro_rules! files {
    ($($path:literal),* $(,)?) => { &[$(($path, include_str!(concat!("../", $path))),)*] };
}

/// The spec files, as `specs/` held them when this binary was built, in the order
/// [`catalog_from_dir`] reads them (by name), so both give the same rule order.
pub const SPEC_FILES: &[(&str, &str)] = files![
    "specs/app-server-groups.toml",
    "specs/app-server-lifetime.toml",
    "specs/app-server-retry.toml",
    "specs/app-server-sends.toml",
    "specs/app-server-xmpp.toml",
    "specs/documents.toml",
    "specs/groups-client.toml",
    "specs/groups-send.toml",
    "specs/groups-server.toml",
    "specs/groups-upstream.toml",
    "specs/lifetime.toml",
    "specs/profiles.toml",
    "specs/send-protocol.toml",
    "specs/xmpp.toml",
];

/// The source documents the quotes are checked against.
pub const SOURCE_FILES: &[(&str, &str)] = files![
    "specs/sources/000_63227b9e89e6b167.txt",
    "specs/sources/001_79231cf90a56f64b.txt",
    "specs/sources/002_ced2ff3663a1a23c.txt",
    "specs/sources/003_55da983154794dbe.txt",
    "specs/sources/protocol-notes.md",
];

pub fn catalog() -> Result<Catalog, SpecErrors> {
    let files: Vec<(String, String)> = SPEC_FILES.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    let sources: BTreeMap<String, String> =
        SOURCE_FILES.iter().map(|(n, t)| (n.rsplit('/').next().unwrap_or(n).to_string(), t.to_string())).collect();
    catalog::load(&files, &sources)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Spec(#[from] SpecErrors),
}

/// Loads every `*.toml` in `dir`, with source documents from `dir/sources/`.
pub fn catalog_from_dir(dir: &Path) -> Result<Catalog, LoadError> {
    let read_dir = |d: &Path| -> Result<Vec<std::path::PathBuf>, LoadError> {
        let io = |source| LoadError::Io { path: d.display().to_string(), source };
        let mut paths: Vec<_> = std::fs::read_dir(d)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        Ok(paths)
    };
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|source| LoadError::Io { path: p.display().to_string(), source });
    let mut files = Vec::new();
    for p in read_dir(dir)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
        files.push((p.display().to_string(), read(&p)?));
    }
    let mut sources = BTreeMap::new();
    let sources_dir = dir.join("sources");
    if sources_dir.is_dir() {
        for p in read_dir(&sources_dir)? {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            sources.insert(name, read(&p)?);
        }
    }
    Ok(catalog::load(&files, &sources)?)
}
