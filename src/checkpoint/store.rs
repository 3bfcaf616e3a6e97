//! `StateStore`: where checkpoints live, through the `object_store` crate (a local directory,
//! `file://`, and `s3://` / `gs://` when built with those features). Its calls block: they
//! run on a small runtime of their own, off the workers' hot path.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Result, VeloError};

/// A checkpoint directory or bucket prefix.
pub struct StateStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// The local directory behind a `file://` store: written files are synced to disk there.
    local_root: Option<std::path::PathBuf>,
    runtime: tokio::runtime::Runtime,
    /// The URL as given, for messages.
    url: String,
}

impl StateStore {
    /// Opens `location`: a directory path (created if missing) or a URL.
    pub fn open(location: &str) -> Result<Self> {
        let local_root = match location.split_once("://") {
            Some(("file", _)) => Some(
                url::Url::parse(location)
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .ok_or_else(|| {
                        VeloError::Config(format!("--state-dir '{location}' is not a file URL"))
                    })?,
            ),
            Some(_) => None,
            None => Some(std::path::PathBuf::from(location)),
        };
        let (store, root): (Arc<dyn ObjectStore>, Path) = match &local_root {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    VeloError::io(format!("creating the state directory {location}"), e)
                })?;
                let local = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| store_error(&format!("opening {location}"), e))?
                    // Deleting a checkpoint's last file removes its directory too.
                    .with_automatic_cleanup(true);
                (Arc::new(local), Path::default())
            }
            None => {
                let url = url::Url::parse(location)
                    .map_err(|e| VeloError::Config(format!("--state-dir '{location}': {e}")))?;
                let (store, root) = object_store::parse_url(&url).map_err(|e| {
                    VeloError::Config(format!(
                        "--state-dir '{location}': {e} (s3:// and gs:// need a build with the \
                         's3' or 'gcs' feature)"
                    ))
                })?;
                (Arc::from(store), root)
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| VeloError::io("starting the state store's runtime", e))?;
        Ok(StateStore {
            store,
            root,
            local_root,
            runtime,
            url: location.to_string(),
        })
    }

    /// The location as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }

    fn relative(&self, path: &Path) -> String {
        path.prefix_match(&self.root)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| path.to_string())
    }

    /// Writes `bytes` at `relative`, atomically (a reader sees all of it or none); on a local
    /// store the file is synced to disk before this returns.
    pub fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(relative);
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from(Bytes::from(bytes))))
            .map_err(|e| store_error(&format!("writing {relative}"), e))?;
        if let Some(dir) = &self.local_root {
            let file = dir.join(relative);
            let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            sync(&file).map_err(|e| VeloError::io(format!("syncing {}", file.display()), e))?;
            if let Some(parent) = file.parent() {
                // The rename that published the file is durable once its directory is.
                sync(parent)
                    .map_err(|e| VeloError::io(format!("syncing {}", parent.display()), e))?;
            }
        }
        Ok(())
    }

    /// Writes `bytes` at `relative` only if nothing is there (false: something was); as
    /// atomic and durable as [`Self::put`].
    pub fn put_new(&self, relative: &str, bytes: Vec<u8>) -> Result<bool> {
        let path = self.path(relative);
        let options = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        let put = self.runtime.block_on(self.store.put_opts(
            &path,
            PutPayload::from(Bytes::from(bytes)),
            options,
        ));
        match put {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(false),
            Err(e) => return Err(store_error(&format!("creating {relative}"), e)),
        }
        if let Some(dir) = &self.local_root {
            let file = dir.join(relative);
            for p in [Some(file.as_path()), file.parent()].into_iter().flatten() {
                std::fs::File::open(p)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| VeloError::io(format!("syncing {}", p.display()), e))?;
            }
        }
        Ok(true)
    }

    /// The bytes at `relative`, or None when there is no such object.
    pub fn get(&self, relative: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(relative);
        let result = self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(got) => got.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        result
            .map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| store_error(&format!("reading {relative}"), e))
    }

    /// Every object under `prefix`, as paths relative to the store's root.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.path(prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|e| store_error(&format!("listing {prefix}"), e))?;
        let mut names: Vec<String> = metas.iter().map(|m| self.relative(&m.location)).collect();
        names.sort();
        Ok(names)
    }

    /// Deletes the object at `relative` (one already gone is no error).
    pub fn delete(&self, relative: &str) -> Result<()> {
        let path = self.path(relative);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(&format!("deleting {relative}"), e)),
        }
    }
}

fn store_error(context: &str, e: object_store::Error) -> VeloError {
    VeloError::Execution(format!("state store: {context}: {e}"))
}
