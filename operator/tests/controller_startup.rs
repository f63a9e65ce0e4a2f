//! Start-up: the CRD check and its message.

mod controller_support;

use controller_support::*;
use kube::CustomResourceExt;
use ssis_crds::{HostConfig, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup};
use ssis_operator::controller::{CrdCheckError, check_crds};

#[tokio::test]
async fn missing_crds_are_named_with_install_instructions() {
    let client = server_with_crds(&[HostConfig::crd()], vec![]).client(operator_identity());
    let error = check_crds(&client).await.unwrap_err();
    let CrdCheckError::Missing(missing) = &error else { panic!("unexpected {error}") };
    assert_eq!(missing.len(), 3);
    let message = error.to_string();
    assert!(message.contains("ssisdbavailabilitygroups.ssis.sqlops.io"), "{message}");
    assert!(!message.contains("hostconfigs.ssis.sqlops.io"), "{message}");
    assert!(message.contains("ssis-operator crd | kubectl apply --server-side -f -"), "{message}");
}

#[tokio::test]
async fn installed_crds_pass() {
    let crds = [HostConfig::crd(), ScaleOutWorker::crd(), ScaleOutMasterGroup::crd(), SsisdbAvailabilityGroup::crd()];
    let client = server_with_crds(&crds, vec![]).client(operator_identity());
    check_crds(&client).await.unwrap();
}
