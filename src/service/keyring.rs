//! The keys part's own state: the root-key backend (the keystore), the cache of unwrapped
//! DEKs and this node's import tokens. Key and DEK operations run on the facade (they read the catalog and commit), but
//! every keystore call goes through [`Keyring::call`] and every cached DEK through
//! [`Keyring::deks`].

use std::sync::Arc;

use super::dek_cache::DekCache;
use super::import_tokens::ImportTokens;
use crate::keystore::RootKeyBackend;

/// The keystore, the DEK cache and the import tokens.
pub(crate) struct Keyring {
    backend: Arc<dyn RootKeyBackend>,
    /// Whether keystore calls may wait on a device or the network (see [`Keyring::call`]).
    remote: bool,
    deks: DekCache,
    /// This node's import tokens (in memory only; `[keys] import_token_*`).
    import_tokens: ImportTokens,
}

impl Keyring {
    pub(crate) fn new(backend: Arc<dyn RootKeyBackend>) -> Self {
        Self {
            remote: backend.describe().remote,
            backend,
            deks: DekCache::default(),
            import_tokens: ImportTokens::default(),
        }
    }

    /// Runs a keystore call. A remote backend (HSM, transit server) may wait up to its
    /// timeout, so the call then leaves the async worker (`block_in_place`) and the runtime
    /// keeps serving other requests, including those answered from the DEK cache; the file
    /// backend is called inline. (Which backend it is does not matter here, only whether it
    /// may block.)
    pub(crate) fn call<T>(&self, call: impl FnOnce(&dyn RootKeyBackend) -> T) -> T {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.remote && multi_thread {
            tokio::task::block_in_place(|| call(self.backend.as_ref()))
        } else {
            call(self.backend.as_ref())
        }
    }

    /// The backend itself, for work that runs off the async workers (`spawn_blocking`) or
    /// only asks it about itself (envelope version, description).
    pub(crate) fn backend(&self) -> &Arc<dyn RootKeyBackend> {
        &self.backend
    }

    /// The unwrapped DEKs.
    pub(crate) fn deks(&self) -> &DekCache {
        &self.deks
    }

    /// Replaces the (still empty) DEK cache, with the configured cap and lifetime.
    pub(crate) fn set_dek_cache(&mut self, deks: DekCache) {
        self.deks = deks;
    }

    /// This node's import tokens.
    pub(crate) fn import_tokens(&self) -> &ImportTokens {
        &self.import_tokens
    }

    /// Replaces the (still empty) import tokens, with the configured settings.
    pub(crate) fn set_import_tokens(&mut self, tokens: ImportTokens) {
        self.import_tokens = tokens;
    }
}
