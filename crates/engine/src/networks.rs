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
        tokio::task::spawn_blocking(move || f(&networks))
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

    /// Removes a network nothing is attached to.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.blocking(move |n| n.remove(&name)).await
    }
}
