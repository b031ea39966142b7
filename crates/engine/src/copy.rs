//! `cp`: describing, archiving and unpacking paths in a container, running or not, through its driver (which
//! keeps every path inside the container's root, volumes and binds included).

use std::sync::Arc;

use husk_core::{
    ArchiveReader, ContainerRecord, ContainerStatus, Driver, Error, ExtractOptions, PathStat,
    Result,
};

use crate::Engine;

/// A container path as drivers take it: absolute, `/` for empty.
fn container_path(path: &str) -> Result<String> {
    if path.contains('\0') {
        return Err(Error::invalid("path", "the path contains a NUL byte"));
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

impl Engine {
    /// The container and its driver, when files can be copied now.
    fn copy_target(&self, key: &str) -> Result<(ContainerRecord, Arc<dyn Driver>)> {
        let rec = self.container(key)?;
        if matches!(
            rec.status,
            ContainerStatus::Creating | ContainerStatus::Removing | ContainerStatus::Dead
        ) {
            return Err(Error::conflict(format!(
                "cannot copy files of container {}: it is {}",
                rec.name(),
                rec.status
            )));
        }
        let driver = self.driver(&rec.driver)?;
        let caps = driver.capabilities();
        caps.require(driver.name(), "copying files (cp)", caps.copy)?;
        Ok((rec, driver))
    }

    /// Describes `path` in the container (a final symbolic link is not followed unless the path ends in `/`).
    pub async fn stat_path(&self, key: &str, path: &str) -> Result<PathStat> {
        let (rec, driver) = self.copy_target(key)?;
        driver.stat_path(&rec, &container_path(path)?).await
    }

    /// A tar archive of `path` in the container, with the path's description.
    pub async fn archive_path(&self, key: &str, path: &str) -> Result<(PathStat, ArchiveReader)> {
        let (rec, driver) = self.copy_target(key)?;
        let path = container_path(path)?;
        let stat = driver.stat_path(&rec, &path).await?;
        let archive = driver.archive(&rec, &path).await?;
        Ok((stat, archive))
    }

    /// Unpacks a tar archive into the directory `dir` of the container.
    pub async fn extract_archive(
        &self,
        key: &str,
        dir: &str,
        archive: ArchiveReader,
        options: &ExtractOptions,
    ) -> Result<()> {
        let (rec, driver) = self.copy_target(key)?;
        let dir = container_path(dir)?;
        let stat = driver
            .stat_path(&rec, &format!("{}/", dir.trim_end_matches('/')))
            .await?;
        if !stat.is_dir() {
            return Err(Error::invalid(
                "path",
                format!("{dir} in container {} is not a directory", rec.name()),
            ));
        }
        let options = ExtractOptions {
            no_overwrite_dir_non_dir: true,
            ..options.clone()
        };
        driver.extract(&rec, &dir, archive, &options).await
    }
}
