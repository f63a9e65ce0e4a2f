//! The CRD YAML committed under `crds/generated/` must be exactly what the Rust types generate:
//! Helm charts, GitOps users and `kubectl apply` install the committed files, not the types.

mod support;

use std::collections::BTreeSet;

const REGENERATE: &str = "regenerate with `cargo run -q -p ssis-operator -- crd --out-dir crds/generated` \
     (or `SSIS_UPDATE_GENERATED=1 cargo test -p ssis-crds --test generated_drift`) and commit the YAML \
     together with the type change";

#[test]
fn committed_crd_yaml_matches_the_rust_types() {
    let dir = support::workspace_root().join("crds/generated");
    let update = std::env::var_os("SSIS_UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for (file, crd) in ssis_crds::generate::all_crds() {
        let path = dir.join(file);
        let expected = ssis_crds::generate::render_yaml(&crd);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != expected {
            if update {
                std::fs::write(&path, &expected).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "out of date or missing: {stale:?}; {REGENERATE}");
}

#[test]
fn generated_directory_holds_only_generated_files() {
    let dir = support::workspace_root().join("crds/generated");
    let expected: BTreeSet<String> =
        ssis_crds::generate::all_crds().into_iter().map(|(file, _)| file.to_string()).collect();
    let present: BTreeSet<String> = support::yaml_files(&dir)
        .iter()
        .map(|p| p.file_name().expect("file name").to_string_lossy().into_owned())
        .collect();
    let extra: Vec<_> = present.difference(&expected).collect();
    assert!(
        extra.is_empty(),
        "crds/generated has files no type generates: {extra:?}; delete them or add the kind to ssis_crds::generate::all_crds"
    );
}

#[test]
fn every_kind_has_a_real_top_level_description() {
    for (file, crd) in ssis_crds::generate::all_crds() {
        let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).unwrap();
        let description = schema.description.as_deref().unwrap_or_default();
        assert!(
            description.starts_with(&crd.spec.names.kind) && !description.contains("Auto-generated"),
            "{file}: `kubectl explain {}` shows {description:?}; add #[kube(doc = \"...\")] to the spec type",
            crd.spec.names.plural
        );
    }
}
