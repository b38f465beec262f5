//! VpnConnection dereference and validation: the network (ready, with its /26), the namespace's Pod Security, the
//! customer's CIDRs and gateway address, and the two keys (the customer's own, or the generated ones, created
//! once). Bad input is a [`Problem`] for the status, not an error.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, ResourceExt};

use super::{
    Context, Error,
    build::{psk_secret, psk_secret_name},
    status::Problem,
};
use crate::{
    api::{PrivateNetwork, VpnConnection},
    controllers::apply::{create_once, get_owned, read},
    vpn::{
        model::Psk,
        psk::generate_psk,
        validate::{POD_SECURITY_ENFORCE, customer_cidrs, customer_gateway, gateway_admitted},
    },
};

/// What the customer side and the network give, once checked: the network's /26, the customer's CIDRs, the
/// customer's gateway address and the two keys.
pub(super) struct Validated {
    pub block: ipnet::Ipv4Net,
    pub cidrs: Vec<ipnet::Ipv4Net>,
    pub gateway_address: Ipv4Addr,
    pub psks: [Psk; 2],
}

/// Dereference and validate: the network (ready, with its /26), the namespace's Pod Security admitting gateway
/// pods, the customer's CIDRs and gateway address, and the keys. Bad input is a [`Problem`], not an error.
pub(super) async fn validate_customer_side(
    vpn: &VpnConnection,
    ctx: &Context,
    ns: &str,
    secrets: &Api<Secret>,
) -> Result<Result<Validated, Problem>, Error> {
    let network = Api::<PrivateNetwork>::namespaced(ctx.client.clone(), ns)
        .get_opt(&vpn.spec.network)
        .await
        .map_err(read("the PrivateNetwork"))?;
    let block = match network.as_ref() {
        None => Err(Problem::stalled(
            "NetworkNotFound",
            format!("PrivateNetwork {} does not exist in this namespace", vpn.spec.network),
        )),
        Some(n) => match n.ready_block() {
            Some(b) => Ok(b),
            None => Err(Problem::waiting(
                "NetworkNotReady",
                format!("PrivateNetwork {} has no range yet", vpn.spec.network),
            )),
        },
    };
    // The namespace must admit the gateway pods at all (Pod Security), before anything is built for them.
    let namespace = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(ns)
        .await
        .map_err(read("the Namespace"))?;
    let enforce = namespace
        .as_ref()
        .and_then(|n| n.labels().get(POD_SECURITY_ENFORCE).cloned());
    let checked = block
        .and_then(|b| {
            gateway_admitted(ns, enforce.as_deref())
                .map(|()| b)
                .map_err(|e| Problem::stalled(e.reason(), e))
        })
        .and_then(|block| {
            let cidrs = customer_cidrs(&vpn.spec.customer_cidrs, block, &ctx.config.pool.reserved)
                .map_err(|e| Problem::stalled(e.reason(), e))?;
            let gateway_address = customer_gateway(
                &vpn.spec.customer_gateway_address,
                ctx.config.allow_documentation_gateways,
            )
            .map_err(|e| Problem::stalled(e.reason(), e))?;
            Ok((block, cidrs, gateway_address))
        });
    let (block, cidrs, gateway_address) = match checked {
        Ok(v) => v,
        Err(p) => return Ok(Err(p)),
    };
    Ok(keys(vpn, secrets).await?.map(|psks| Validated {
        block,
        cidrs,
        gateway_address,
        psks,
    }))
}

/// The two keys: the customer's own (validated) where given, else the generated ones (created once).
async fn keys(vpn: &VpnConnection, secrets: &Api<Secret>) -> Result<Result<[Psk; 2], Problem>, Error> {
    // A Secret with the generated keys' name that the operator did not make is never taken as holding its keys.
    let mut generated = get_owned(
        secrets,
        &psk_secret_name(vpn),
        &vpn.uid().unwrap_or_default(),
        "the PSK Secret",
    )
    .await?;
    let mut out = Vec::new();
    for i in 0..2 {
        let own = vpn.spec.tunnel_options.get(i).and_then(|o| o.psk_secret_ref.as_ref());
        let key = match own {
            Some(r) => {
                let Some(secret) = secrets.get_opt(&r.name).await.map_err(read("a PSK Secret"))? else {
                    return Ok(Err(Problem::stalled(
                        "SecretNotFound",
                        format!("Secret {} (tunnelOptions[{i}].pskSecretRef) does not exist", r.name),
                    )));
                };
                let Some(value) = crate::secret::value(&secret, &r.key) else {
                    return Ok(Err(Problem::stalled(
                        "SecretKeyNotFound",
                        format!("Secret {} has no key {}", r.name, r.key),
                    )));
                };
                match Psk::new(value) {
                    Ok(key) => key,
                    Err(e) => return Ok(Err(Problem::stalled("InvalidPsk", format!("tunnel {}: {e}", i + 1)))),
                }
            }
            None => {
                if generated.is_none() {
                    let fresh = psk_secret(vpn, generate_psk(), generate_psk());
                    generated = match create_once(secrets, &fresh, "the PSK Secret").await? {
                        Some(created) => Some(created),
                        // Made meanwhile by another reconcile: read it (and check that it is the operator's).
                        None => {
                            let uid = vpn.uid().unwrap_or_default();
                            get_owned(secrets, &psk_secret_name(vpn), &uid, "the PSK Secret").await?
                        }
                    };
                }
                match generated
                    .as_ref()
                    .and_then(|s| crate::secret::value(s, &format!("tunnel{}", i + 1)))
                {
                    // A generated key edited by hand is checked as a customer's would be: a quote or a line break
                    // in it would otherwise end the `secret = "…"` line of every configuration it is written into.
                    Some(v) => match Psk::new(v) {
                        Ok(key) => key,
                        Err(e) => {
                            return Ok(Err(Problem::stalled(
                                "InvalidPsk",
                                format!("Secret {} key tunnel{}: {e}", psk_secret_name(vpn), i + 1),
                            )));
                        }
                    },
                    None => {
                        return Ok(Err(Problem::stalled(
                            "SecretKeyNotFound",
                            format!("Secret {} lost its key tunnel{}", psk_secret_name(vpn), i + 1),
                        )));
                    }
                }
            }
        };
        out.push(key);
    }
    let [a, b]: [Psk; 2] = out.try_into().expect("two tunnels");
    Ok(Ok([a, b]))
}
