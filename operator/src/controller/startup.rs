//! Start-up check: the four CRDs must be installed before anything else runs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CrdCheckError {
    #[error(
        "CustomResourceDefinitions not installed: {}. Install them with:\n  ssis-operator crd | kubectl apply --server-side -f -\n(or apply the files under crds/generated/), then restart the operator.",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    #[error(
        "cannot read CustomResourceDefinition {name}: {source} (the operator needs `get` on apiextensions.k8s.io customresourcedefinitions)"
    )]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Names of the CRDs the operator needs.
pub fn required_crds() -> Vec<String> {
    ssis_crds::generate::all_crds().into_iter().filter_map(|(_, crd)| crd.metadata.name).collect()
}

/// GET every required CRD by name.
pub async fn check_crds(client: &kube::Client) -> Result<(), CrdCheckError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = vec![];
    for name in required_crds() {
        match api.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(name),
            Err(source) => return Err(CrdCheckError::Api { name, source }),
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(CrdCheckError::Missing(missing)) }
}
