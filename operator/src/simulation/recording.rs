//! A [`Catalog`] wrapper that records every SQL action that succeeded, so the world can say what
//! the operator did in SQL each round.

use std::sync::{Arc, Mutex};

use crate::catalog::{Catalog, CatalogError, CatalogObservation, CatalogTarget, SecretString, SecretValue, SqlAction};

/// Delegates to `inner` and records `(availability group key, action)` of every successful execute.
#[derive(Clone)]
pub struct RecordingCatalog<C> {
    pub inner: C,
    log: Arc<Mutex<Vec<(String, SqlAction)>>>,
}

impl<C> RecordingCatalog<C> {
    pub fn new(inner: C) -> Self {
        Self { inner, log: Arc::new(Mutex::new(Vec::new())) }
    }

    /// The actions recorded since the last call.
    pub fn drain(&self) -> Vec<(String, SqlAction)> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl<C: Catalog> Catalog for RecordingCatalog<C> {
    async fn observe(&self, target: &CatalogTarget) -> Result<CatalogObservation, CatalogError> {
        self.inner.observe(target).await
    }

    async fn observe_roles(&self, target: &CatalogTarget) -> Result<crate::catalog::RoleSnapshot, CatalogError> {
        self.inner.observe_roles(target).await
    }

    async fn execute(
        &self,
        target: &CatalogTarget,
        action: &SqlAction,
        resolve: &(dyn Fn(&SecretValue) -> SecretString + Sync),
    ) -> Result<(), CatalogError> {
        self.inner.execute(target, action, resolve).await?;
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((target.key.clone(), action.clone()));
        Ok(())
    }
}
