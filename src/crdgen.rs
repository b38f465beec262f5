//! Rendering the CustomResourceDefinitions as YAML, for `appdb-operator crds`, `crds/` and the Helm chart.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::api::all_crds;

/// Errors while rendering or writing CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdGenError {
    #[error("cannot render CRD {name} as YAML: {source}")]
    Render {
        name: String,
        source: serde_saphyr::SerializeError,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// The file a CRD is written to inside `crds/` (`appdb.dev_privatenetworks.yaml`).
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML document (without the `---` separator).
pub fn render(crd: &CustomResourceDefinition) -> Result<String, CrdGenError> {
    serde_saphyr::to_string(crd).map_err(|source| CrdGenError::Render {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

/// Every CRD as one multi-document YAML stream, as `appdb-operator crds` prints it.
pub fn render_all() -> Result<String, CrdGenError> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&render(&crd)?);
    }
    Ok(out)
}

/// Every CRD as `(file name, YAML)`, as `crds/` and the chart hold them.
pub fn render_files() -> Result<Vec<(String, String)>, CrdGenError> {
    all_crds()
        .iter()
        .map(|crd| Ok((file_name(crd), render(crd)?)))
        .collect()
}

/// Writes one file per CRD into `dir`.
pub fn write_files(dir: &std::path::Path) -> Result<(), CrdGenError> {
    std::fs::create_dir_all(dir).map_err(|source| CrdGenError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for (name, yaml) in render_files()? {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(|source| CrdGenError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}
