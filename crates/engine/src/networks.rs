//! CNI network management (`husk network ...`), over the daemon's [`husk_net::Networks`].

use husk_core::{Error, Result};
use husk_net::{NetworkInfo, NewNetwork};

use crate::Engine;

impl Engine {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&husk_net::Networks) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let networks = self.inner.networks.clone();
        husk_core::spawn_blocking(move || f(&networks))
            .await
            .map_err(|e| Error::internal(format!("network task: {e}")))?
    }

    /// The configured networks.
    pub async fn list_networks(&self) -> Result<Vec<NetworkInfo>> {
        self.blocking(|n| n.list()).await
    }

    /// One network, with the sandboxes attached to it.
    pub async fn inspect_network(&self, name: &str) -> Result<NetworkInfo> {
        let name = name.to_string();
        self.blocking(move |n| n.inspect(&name)).await
    }

    /// Creates a bridge network.
    pub async fn create_network(&self, request: NewNetwork) -> Result<NetworkInfo> {
        husk_core::units::validate_name("name", &request.name)?;
        self.blocking(move |n| n.create(&request)).await
    }

    /// Removes a network nothing is attached to. Attachments of sandboxes and containers already removed are
    /// still being released in the background (see the drivers): wait for those rather than refuse.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n = name.to_string();
            let err = match self.blocking(move |nets| nets.remove(&n)).await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind == husk_core::ErrorKind::Conflict => e,
                Err(e) => return Err(e),
            };
            let info = self.inspect_network(name).await?;
            let releasing = info
                .attached
                .iter()
                .all(|a| !self.owns_attachment(&a.sandbox_id));
            if !releasing || tokio::time::Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Whether a live sandbox or container of this daemon holds the attachment `owner` (a sandbox's or a
    /// standalone container's ID).
    fn owns_attachment(&self, owner: &str) -> bool {
        let store = &self.inner.store;
        matches!(store.get::<husk_core::SandboxRecord>(owner), Ok(Some(_)))
            || matches!(store.get::<husk_core::ContainerRecord>(owner), Ok(Some(_)))
    }
}
