//! Shell completion for `kubectl appdb`, in the protocol kubectl's plugin completion speaks (kubectl 1.26 and
//! later): for `kubectl appdb <words> <TAB>`, kubectl runs `kubectl_complete-appdb <words> <partial word>` from
//! `PATH` and reads cobra's format back: one candidate per line (`name<TAB>description`), then `:<directive>`.
//! `kubectl_complete-appdb` is a two-line script (`plugins/kubectl_complete-appdb`) running
//! `kubectl-appdb __complete`, or a symlink to `kubectl-appdb` (the binary answers to that name too).
//!
//! What to offer is decided from the words alone (`want`, pure and unit-tested); only database, connection and
//! namespace names are then read from the cluster, with the same kubeconfig flags the command would use.

use std::time::Duration;

use kube::{Api, ResourceExt, api::ListParams};

use crate::{
    api::{AppDatabase, VpnConnection},
    vpn::render::DEVICE_FORMATS,
};

/// cobra's `ShellCompDirectiveNoFileComp`: offer these candidates and no file names.
const NO_FILES: u8 = 4;
/// cobra's `ShellCompDirectiveDefault`: the shell may complete file names.
const FILES: u8 = 0;

const SUBCOMMANDS: &[(&str, &str)] = &[
    ("tunnel", "Open a local port that leads to a database"),
    ("vpn-config", "Print a VPN device's configuration"),
    ("status", "Networks, databases, VPN tunnels and migrations"),
    ("help", "Print help"),
];

/// Flags every subcommand takes, and whether each takes a value.
const GLOBAL_FLAGS: &[(&str, bool)] = &[
    ("--namespace", true),
    ("-n", true),
    ("--kubeconfig", true),
    ("--context", true),
    ("--cluster", true),
    ("--user", true),
    ("--as", true),
    ("--as-group", true),
    ("--request-timeout", true),
    ("--help", false),
];

fn subcommand_flags(subcommand: &str) -> &'static [(&'static str, bool)] {
    match subcommand {
        "tunnel" => &[("--local-port", true), ("--address", true), ("--config", true)],
        "vpn-config" => &[("--device", true), ("--list-devices", false)],
        _ => &[],
    }
}

/// What the word being completed should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Subcommands,
    Flags(String),
    Databases,
    Connections,
    Devices,
    Namespaces,
    Contexts,
    Files,
    Nothing,
}

/// The kubeconfig flags already on the command line, so that names come from the cluster and namespace the
/// command will use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub namespace: Option<String>,
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
}

fn takes_value(subcommand: Option<&str>, flag: &str) -> Option<bool> {
    let flag = flag.split('=').next().unwrap_or(flag);
    GLOBAL_FLAGS
        .iter()
        .chain(subcommand.map(subcommand_flags).unwrap_or_default())
        .find(|(name, _)| *name == flag)
        .map(|(_, value)| *value)
}

/// Reads the words typed so far (without the partial word): the subcommand, the kubeconfig flags, and whether
/// the last word is a flag waiting for its value.
pub fn read_words(words: &[String]) -> (Option<String>, Target, Option<String>, usize) {
    let mut subcommand = None;
    let mut target = Target::default();
    let mut positionals = 0;
    let mut pending: Option<String> = None;
    for word in words {
        if let Some(flag) = pending.take() {
            match flag.as_str() {
                "-n" | "--namespace" => target.namespace = Some(word.clone()),
                "--kubeconfig" => target.kubeconfig = Some(word.clone()),
                "--context" => target.context = Some(word.clone()),
                _ => {}
            }
            continue;
        }
        if word.starts_with('-') {
            if let Some((flag, value)) = word.split_once('=') {
                match flag {
                    "-n" | "--namespace" => target.namespace = Some(value.to_owned()),
                    "--kubeconfig" => target.kubeconfig = Some(value.to_owned()),
                    "--context" => target.context = Some(value.to_owned()),
                    _ => {}
                }
            } else if takes_value(subcommand.as_deref(), word) == Some(true) {
                pending = Some(word.clone());
            }
            continue;
        }
        if subcommand.is_none() {
            subcommand = Some(word.clone());
        } else {
            positionals += 1;
        }
    }
    (subcommand, target, pending, positionals)
}

/// What to offer for `partial`, after `words`.
pub fn want(words: &[String], partial: &str) -> Want {
    let (subcommand, _, pending, positionals) = read_words(words);
    if let Some(flag) = pending {
        return match flag.as_str() {
            "-n" | "--namespace" => Want::Namespaces,
            "--context" => Want::Contexts,
            "--device" => Want::Devices,
            "--kubeconfig" | "--config" => Want::Files,
            _ => Want::Nothing,
        };
    }
    if partial.starts_with('-') {
        return Want::Flags(subcommand.unwrap_or_default());
    }
    match (subcommand.as_deref(), positionals) {
        (None, _) => Want::Subcommands,
        (Some("tunnel"), 0) => Want::Databases,
        (Some("vpn-config"), 0) => Want::Connections,
        _ => Want::Nothing,
    }
}

/// Candidates that need no cluster, filtered by the partial word.
fn offline(want: &Want, partial: &str) -> Option<Vec<String>> {
    let with = |items: &mut dyn Iterator<Item = (&str, &str)>| {
        items
            .filter(|(name, _)| name.starts_with(partial))
            .map(|(name, description)| {
                if description.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}\t{description}")
                }
            })
            .collect::<Vec<_>>()
    };
    match want {
        Want::Subcommands => Some(with(&mut SUBCOMMANDS.iter().copied())),
        Want::Devices => Some(with(&mut DEVICE_FORMATS.iter().copied())),
        Want::Flags(subcommand) => Some(with(
            &mut GLOBAL_FLAGS
                .iter()
                .chain(subcommand_flags(subcommand))
                .map(|(name, _)| (*name, "")),
        )),
        Want::Nothing | Want::Files => Some(Vec::new()),
        Want::Databases | Want::Connections | Want::Namespaces | Want::Contexts => None,
    }
}

/// The completion answer: candidates, then the directive line.
pub fn answer(candidates: &[String], want: &Want) -> String {
    let directive = if *want == Want::Files { FILES } else { NO_FILES };
    let mut out: String = candidates.iter().map(|c| format!("{c}\n")).collect();
    out.push_str(&format!(":{directive}\n"));
    out
}

/// Completes `args` (the words after `kubectl appdb`, the last one partial). Errors (no cluster, no access) give
/// no candidates rather than noise in the shell.
pub async fn complete(args: &[String]) -> String {
    let (partial, words) = match args.split_last() {
        Some((partial, words)) => (partial.as_str(), words),
        None => ("", &[][..]),
    };
    let want = want(words, partial);
    let candidates = match offline(&want, partial) {
        Some(candidates) => candidates,
        None => {
            let (_, target, _, _) = read_words(words);
            tokio::time::timeout(Duration::from_secs(5), from_cluster(&want, &target))
                .await
                .ok()
                .flatten()
                .unwrap_or_default()
                .into_iter()
                .filter(|name| name.starts_with(partial))
                .collect()
        }
    };
    answer(&candidates, &want)
}

async fn from_cluster(want: &Want, target: &Target) -> Option<Vec<String>> {
    let kubeconfig = match &target.kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path).ok()?,
        None => kube::config::Kubeconfig::read().ok()?,
    };
    if *want == Want::Contexts {
        return Some(kubeconfig.contexts.iter().map(|c| c.name.clone()).collect());
    }
    let options = kube::config::KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.ok()?;
    let namespace = target.namespace.clone().unwrap_or(config.default_namespace.clone());
    let client = crate::client::interactive(config, "kubectl-appdb", Some(Duration::from_secs(5))).ok()?;
    match want {
        Want::Databases => names(Api::<AppDatabase>::namespaced(client, &namespace)).await,
        Want::Connections => names(Api::<VpnConnection>::namespaced(client, &namespace)).await,
        Want::Namespaces => names(Api::<k8s_openapi::api::core::v1::Namespace>::all(client)).await,
        _ => None,
    }
}

/// The names `api` lists (metadata only: completion needs nothing else).
async fn names<K>(api: Api<K>) -> Option<Vec<String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api.list_metadata(&ListParams::default()).await.ok()?;
    Some(list.items.iter().map(ResourceExt::name_any).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn what_to_offer_follows_the_words_typed() {
        for (typed, partial, expected) in [
            ("", "", Want::Subcommands),
            ("", "tu", Want::Subcommands),
            ("-n acme", "", Want::Subcommands),
            ("tunnel", "", Want::Databases),
            ("tunnel", "or", Want::Databases),
            ("-n acme tunnel", "", Want::Databases),
            ("tunnel -n acme", "", Want::Databases),
            ("tunnel orders", "", Want::Nothing),
            ("tunnel --local-port", "", Want::Nothing),
            ("tunnel --local-port 3307", "", Want::Databases),
            ("tunnel --config", "", Want::Files),
            ("vpn-config", "", Want::Connections),
            ("vpn-config seattle --device", "", Want::Devices),
            ("vpn-config seattle --device", "cis", Want::Devices),
            ("vpn-config --list-devices", "", Want::Connections),
            ("status", "", Want::Nothing),
            ("status -n", "", Want::Namespaces),
            ("--namespace", "ac", Want::Namespaces),
            ("--context", "", Want::Contexts),
            ("tunnel", "--lo", Want::Flags("tunnel".into())),
            ("", "--", Want::Flags(String::new())),
        ] {
            assert_eq!(want(&words(typed), partial), expected, "{typed:?} + {partial:?}");
        }
    }

    #[test]
    fn the_kubeconfig_flags_typed_are_used_for_names() {
        let (subcommand, target, pending, _) =
            read_words(&words("--kubeconfig /tmp/k --context=kind-kind tunnel -n acme"));
        assert_eq!(subcommand.as_deref(), Some("tunnel"));
        assert_eq!(pending, None);
        assert_eq!(
            target,
            Target {
                namespace: Some("acme".into()),
                kubeconfig: Some("/tmp/k".into()),
                context: Some("kind-kind".into()),
            }
        );
    }

    #[test]
    fn offline_candidates_are_filtered_and_described() {
        let subcommands = offline(&Want::Subcommands, "").unwrap();
        assert_eq!(subcommands.len(), 4);
        assert_eq!(
            offline(&Want::Subcommands, "vp").unwrap(),
            ["vpn-config\tPrint a VPN device's configuration"]
        );
        let devices = offline(&Want::Devices, "").unwrap();
        assert_eq!(devices.len(), DEVICE_FORMATS.len());
        assert!(devices.iter().all(|d| d.contains('\t')), "{devices:?}");
        let flags = offline(&Want::Flags("tunnel".into()), "--lo").unwrap();
        assert_eq!(flags, ["--local-port"]);
        assert_eq!(answer(&flags, &Want::Flags("tunnel".into())), "--local-port\n:4\n");
        assert_eq!(answer(&[], &Want::Files), ":0\n");
        assert_eq!(offline(&Want::Databases, ""), None, "names come from the cluster");
    }
}
