//! `appdb-operator crds`: the CustomResourceDefinitions, to stdout or one file per kind.

use std::{path::PathBuf, process::ExitCode};

use crate::crdgen;

pub fn run(out_dir: Option<PathBuf>) -> ExitCode {
    let result = match out_dir {
        Some(dir) => crdgen::write_files(&dir),
        None => crdgen::render_all().map(|yaml| print!("{yaml}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
